"""MTA-STS: the TXT record and policy parsers, rendering and ids, and the policy fetch over real sockets.

The fetch runs against real HTTP(S) servers on loopback (uvicorn, through the admin listener) found
through the test DNS server: the admin app for what Postroom serves, a small app of canned responses
for what a broken web server sends, and a raw socket that never answers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from postroom.admin import AdminListener, build_admin_app
from postroom.app.setup import write_self_signed
from postroom.config.settings import ListenAddress
from postroom.dns import DnsResolver
from postroom.dns.mta_sts import (
    MAX_POLICY_SIZE,
    POLICY_PATH,
    FetchedPolicy,
    MtaStsError,
    StsPolicy,
    StsTxt,
    fetch_sts_policy,
    parse_sts_policy,
    parse_sts_txt,
    policy_id,
    render_sts_policy,
)
from support.dns_server import DnsTestServer

POLICY = render_sts_policy("enforce", ["mx1.example.test", "*.mx.example.test"], 86400)
BROKEN_POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.broken.test\r\nmax_age: a week\r\n"
POLICIES = {"example.test": POLICY, "broken.test": BROKEN_POLICY}


# -- the TXT record


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=STSv1; id=20160831085700Z", StsTxt("20160831085700Z")),
        ("v=STSv1;id=abc", StsTxt("abc")),
        ("v=STSv1; id=abc;", StsTxt("abc")),
        ("v=STSv1 ;\tid=abc ; ", StsTxt("abc")),
        ("v=STSv1; id=" + "a1" * 16, StsTxt("a1" * 16)),
        ("v=STSv1; id=abc; ext_1=value", StsTxt("abc", (("ext_1", "value"),))),
        ("v=STSv1; x.y-z=1:2; id=abc", StsTxt("abc", (("x.y-z", "1:2"),))),
    ],
)
def test_txt_record_parses(text: str, expected: StsTxt) -> None:
    assert parse_sts_txt(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must start with v=STSv1"),
        ("V=STSv1; id=abc", "must start with v=STSv1"),
        ("v=STSv2; id=abc", "must start with v=STSv1"),
        ("id=abc; v=STSv1", "must start with v=STSv1"),
        (" v=STSv1; id=abc", "must start with v=STSv1"),
        ("v=STSv1x; id=abc", "must be followed by ';'"),
        ("v=STSv1", "id field is missing"),
        ("v=STSv1;", "id field is missing"),
        ("v=STSv1; ext=1", "id field is missing"),
        ("v=STSv1; id=", "1 to 32 letters and digits"),
        ("v=STSv1; id=" + "a" * 33, "1 to 32 letters and digits"),
        ("v=STSv1; id=2016-08-31", "1 to 32 letters and digits"),
        ("v=STSv1; id=abc; id=def", "id appears more than once"),
        ("v=STSv1; v=STSv1; id=abc", "v appears more than once"),
        ("v=STSv1; id=abc;; ext=1", "two ';' in a row"),
        ("v=STSv1; id=abc; flag", "not name=value"),
        ("v=STSv1; id=abc; _ext=1", "field name '_ext' must be letters, digits"),
        ("v=STSv1; id=abc; ext=two words", "must be printable, without spaces"),
        ("v=STSv1; id=abc; ext=", "must be printable, without spaces"),
    ],
)
def test_bad_txt_record_says_why(text: str, reason: str) -> None:
    with pytest.raises(MtaStsError, match=reason) as raised:
        parse_sts_txt(text)
    assert isinstance(raised.value, ValueError)


# -- the policy file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (POLICY, StsPolicy("enforce", ("mx1.example.test", "*.mx.example.test"), 86400)),
        (
            "version: STSv1\nmode: testing\nmx: MX.Example.COM\nmax_age: 0\n",
            StsPolicy("testing", ("mx.example.com",), 0),
        ),
        (
            "mx: a.test\r\nmax_age: 31557600\r\nmode: enforce\r\nversion: STSv1",
            StsPolicy("enforce", ("a.test",), 31557600),
        ),
        (
            "version:STSv1\nmode:\t testing \nmx:a.test  \nmax_age: 60\n\n",
            StsPolicy("testing", ("a.test",), 60),
        ),
        ("version: STSv1\nmode: none\nmax_age: 86400\n", StsPolicy("none", (), 86400)),
        (
            "version: STSv1\nmode: enforce\nfuture_key: anything: at all\nmx: a.test\nmax_age: 5\n",
            StsPolicy("enforce", ("a.test",), 5),
        ),
    ],
)
def test_policy_parses(text: str, expected: StsPolicy) -> None:
    assert parse_sts_policy(text) == expected


VALID_FIELDS = {"version": "STSv1", "mode": "enforce", "mx": "mx.example.test", "max_age": "86400"}


def policy_with(**fields: str | None) -> str:
    """A valid policy with some fields replaced (None: left out)."""
    merged = {**VALID_FIELDS, **fields}
    return "".join(f"{key}: {value}\r\n" for key, value in merged.items() if value is not None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (policy_with(version=None), "version is missing"),
        (policy_with(version="STSv2"), "version must be STSv1"),
        (policy_with() + "version: STSv1\r\n", "version appears more than once"),
        (policy_with(mode=None), "mode is missing"),
        (policy_with(mode="Enforce"), "mode must be enforce, testing or none"),
        (policy_with(mode="strict"), "mode must be enforce, testing or none"),
        (policy_with() + "mode: testing\r\n", "mode appears more than once"),
        (policy_with(max_age=None), "max_age is missing"),
        (policy_with(max_age="-1"), "max_age must be whole seconds from 0 to 31557600"),
        (policy_with(max_age="31557601"), "max_age must be whole seconds"),
        (policy_with(max_age="99999999999"), "max_age must be whole seconds"),
        (policy_with(max_age="1w"), "max_age must be whole seconds"),
        (policy_with(max_age=""), "max_age must be whole seconds"),
        (policy_with(mx=None), "mx is missing: mode enforce needs at least one mx pattern"),
        (policy_with(mx=None, mode="testing"), "mx is missing: mode testing"),
        (policy_with(mx="*"), "wildcard is allowed only as the whole leftmost label"),
        (policy_with(mx="mail.*.example.test"), "wildcard is allowed only as the whole leftmost label"),
        (policy_with(mx="*mail.example.test"), "wildcard is allowed only as the whole leftmost label"),
        (policy_with(mx="*.*.example.test"), "wildcard is allowed only as the whole leftmost label"),
        (policy_with(mx="mx example.test"), "is not a host name"),
        (policy_with(mx="-mx.example.test"), "is not a host name"),
        (policy_with(mx="mx.example.test."), "is not a host name"),
        (policy_with(mx=""), "is not a host name"),
        (policy_with(mx="mx." + "a" * 64 + ".test"), "is not a host name"),
        (policy_with(mx="mx.exämple.test"), "must be written in ASCII"),
        (policy_with() + "just words\r\n", "line 5 .* is not `key: value`"),
        (policy_with() + "mode = enforce\r\n", "is not `key: value`"),
        (" " + policy_with(), "line 1 .* is not `key: value`"),
    ],
)
def test_bad_policy_names_the_key_and_problem(text: str, reason: str) -> None:
    with pytest.raises(MtaStsError, match=reason):
        parse_sts_policy(text)


@pytest.mark.parametrize(
    ("patterns", "host", "matches"),
    [
        (("mx.example.test",), "mx.example.test", True),
        (("mx.example.test",), "MX.Example.Test.", True),
        (("mx.example.test",), "mx2.example.test", False),
        (("mx.example.test",), "a.mx.example.test", False),
        (("*.example.test",), "mail.example.test", True),
        (("*.example.test",), "Mail.EXAMPLE.test", True),
        (("*.example.test",), "example.test", False),
        (("*.example.test",), "foo.bar.example.test", False),
        (("*.example.test",), ".example.test", False),
        (("*.example.test",), "mail.example.test.evil", False),
        (("a.test", "*.b.test"), "x.b.test", True),
        (("a.test", "*.b.test"), "a.test", True),
        ((), "a.test", False),
    ],
)
def test_matches_exact_names_and_one_label_wildcards(
    patterns: tuple[str, ...], host: str, matches: bool
) -> None:
    assert StsPolicy("enforce", patterns, 60).matches(host) is matches


@pytest.mark.parametrize(
    ("mode", "mx", "max_age"),
    [
        ("enforce", ["mx1.example.test"], 604800),
        ("testing", ["MX1.Example.Test", "*.mx.example.test"], 86400),
        ("none", [], 0),
        ("enforce", ["a.test"], 31557600),
    ],
)
def test_render_then_parse_round_trips(mode: str, mx: list[str], max_age: int) -> None:
    text = render_sts_policy(mode, mx, max_age)
    assert text.startswith("version: STSv1\r\n") and text.endswith(f"max_age: {max_age}\r\n")
    assert "\n" not in text.replace("\r\n", "")
    assert parse_sts_policy(text) == StsPolicy(mode, tuple(pattern.lower() for pattern in mx), max_age)


@pytest.mark.parametrize(
    ("mode", "mx", "max_age", "reason"),
    [
        ("strict", ["mx.example.test"], 60, "mode must be"),
        ("enforce", [], 60, "mx is missing"),
        ("enforce", ["mail.*.example.test"], 60, "wildcard"),
        ("enforce", ["mx.example.test"], -1, "max_age"),
        ("enforce", ["mx.example.test"], 31557601, "max_age"),
    ],
)
def test_render_refuses_what_would_not_parse(mode: str, mx: list[str], max_age: int, reason: str) -> None:
    with pytest.raises(MtaStsError, match=reason):
        render_sts_policy(mode, mx, max_age)


def test_policy_id_is_stable_and_changes_with_the_policy() -> None:
    assert (
        policy_id(POLICY) == "6207ea87342ebff8c326"
    )  # the same text gives the same id, release after release
    assert policy_id(POLICY) == policy_id(
        render_sts_policy("enforce", ["mx1.example.test", "*.mx.example.test"], 86400)
    )
    others = {
        policy_id(render_sts_policy("testing", ["mx1.example.test", "*.mx.example.test"], 86400)),
        policy_id(render_sts_policy("enforce", ["mx1.example.test"], 86400)),
        policy_id(render_sts_policy("enforce", ["mx1.example.test", "*.mx.example.test"], 86401)),
    }
    assert len(others) == 3 and policy_id(POLICY) not in others
    assert parse_sts_txt(f"v=STSv1; id={policy_id(POLICY)}") == StsTxt(policy_id(POLICY))


# -- fetching the policy over real sockets


@dataclass(frozen=True)
class Certificate:
    certificate: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.key)
        return context

    def trusting_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate alone and checks host names."""
        return ssl.create_default_context(cafile=str(self.certificate))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    """Self-signed certificates as `postroom init` writes them: for the policy host, and for another."""
    made = {}
    for name in ("mta-sts.example.test", "www.example.test"):
        directory = tmp_path_factory.mktemp(name)
        made[name] = Certificate(directory / "cert.pem", directory / "key.pem")
        write_self_signed(made[name].certificate, made[name].key, [name])
    return made


ADDRESSED = (  # domains whose mta-sts host is 127.0.0.1
    "example.test",
    "broken.test",
    "missing.test",
    "redirect.test",
    "html.test",
    "untyped.test",
    "chunked.test",
    "large.test",
    "large-chunked.test",
)
STS_ZONES = {domain: "mta-sts IN A 127.0.0.1\n" for domain in ADDRESSED} | {
    "nxdomain.test": "",
    "noaddress.test": 'mta-sts IN TXT "no address here"\n',
    "v6.test": "mta-sts IN AAAA ::1\n",
}


@pytest.fixture(scope="module")
def sts_dns() -> Iterator[DnsTestServer]:
    with DnsTestServer(STS_ZONES) as server:
        yield server


@pytest.fixture
def resolver(sts_dns: DnsTestServer) -> DnsResolver:
    return DnsResolver(sts_dns.settings())


def canned(request: Request) -> Response:
    """What a misconfigured web server sends, chosen by the Host header."""
    host = request.headers["host"].partition(":")[0]
    large = b"x" * (MAX_POLICY_SIZE + 1)
    responses: dict[str, Callable[[], Response]] = {
        "mta-sts.redirect.test": lambda: RedirectResponse(
            "https://www.redirect.test/sts.txt", status_code=301
        ),
        "mta-sts.html.test": lambda: HTMLResponse(POLICY),
        "mta-sts.untyped.test": lambda: Response(POLICY),
        "mta-sts.chunked.test": lambda: StreamingResponse(
            iter([POLICY[:20].encode(), POLICY[20:].encode()]), media_type="text/plain"
        ),
        "mta-sts.large.test": lambda: Response(large, media_type="text/plain"),
        "mta-sts.large-chunked.test": lambda: StreamingResponse(
            iter([large[:40000], large[40000:]]), media_type="text/plain"
        ),
    }
    return responses[host]()


async def serve(app: ASGIApp, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> AdminListener:
    listener = AdminListener(app, (ListenAddress(host, 0),), ssl_context=tls)
    await listener.start()
    return listener


@pytest.fixture
async def admin_port() -> AsyncIterator[int]:
    """The admin app (what Postroom serves) over plain HTTP, with `POLICIES`."""
    listener = await serve(build_admin_app(POLICIES.get))
    yield listener.bound[0].port
    await listener.stop(1)


@pytest.fixture
async def canned_port() -> AsyncIterator[int]:
    listener = await serve(Starlette(routes=[Route(POLICY_PATH, canned)]))
    yield listener.bound[0].port
    await listener.stop(1)


async def test_fetch_over_http(resolver: DnsResolver, admin_port: int) -> None:
    fetched = await fetch_sts_policy(resolver, "Example.Test.", port=admin_port, ssl_context=None)
    assert fetched == FetchedPolicy(
        url=f"http://mta-sts.example.test:{admin_port}/.well-known/mta-sts.txt",
        status=200,
        content_type="text/plain; charset=utf-8",
        text=POLICY,
        policy=parse_sts_policy(POLICY),
    )
    assert fetched.policy is not None and fetched.policy.matches("a.mx.example.test")


async def test_fetch_reads_a_chunked_body(resolver: DnsResolver, canned_port: int) -> None:
    fetched = await fetch_sts_policy(resolver, "chunked.test", port=canned_port, ssl_context=None)
    assert (fetched.error, fetched.text, fetched.policy) == (None, POLICY, parse_sts_policy(POLICY))


async def test_fetch_falls_back_to_aaaa(resolver: DnsResolver) -> None:
    try:
        listener = await serve(build_admin_app({"v6.test": POLICY}.get), host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        fetched = await fetch_sts_policy(resolver, "v6.test", port=listener.bound[0].port, ssl_context=None)
    finally:
        await listener.stop(1)
    assert (fetched.error, fetched.policy) == (None, parse_sts_policy(POLICY))


@pytest.mark.parametrize(
    ("domain", "status", "error"),
    [
        ("missing.test", 404, "HTTP status 404 instead of 200"),
        ("broken.test", 200, "policy syntax: max_age must be whole seconds from 0 to 31557600, not 'a week'"),
    ],
)
async def test_fetch_from_the_admin_app_fails(
    resolver: DnsResolver, admin_port: int, domain: str, status: int, error: str
) -> None:
    fetched = await fetch_sts_policy(resolver, domain, port=admin_port, ssl_context=None)
    assert (fetched.status, fetched.error, fetched.policy) == (status, error, None)


@pytest.mark.parametrize(
    ("domain", "status", "error"),
    [
        (
            "redirect.test",
            301,
            "HTTP 301 redirect to https://www.redirect.test/sts.txt: senders do not follow redirects "
            "(RFC 8461 §3.3); serve the policy at this URL",
        ),
        ("html.test", 200, "Content-Type is text/html; charset=utf-8; RFC 8461 §3.2 requires text/plain"),
        ("untyped.test", 200, "Content-Type is (none); RFC 8461 §3.2 requires text/plain"),
        ("large.test", None, f"the policy from mta-sts.large.test is larger than {MAX_POLICY_SIZE} octets"),
        (
            "large-chunked.test",
            None,
            f"the policy from mta-sts.large-chunked.test is larger than {MAX_POLICY_SIZE} octets",
        ),
    ],
)
async def test_fetch_from_a_misconfigured_server_fails(
    resolver: DnsResolver, canned_port: int, domain: str, status: int | None, error: str
) -> None:
    fetched = await fetch_sts_policy(resolver, domain, port=canned_port, ssl_context=None)
    assert (fetched.status, fetched.error, fetched.policy, fetched.text) == (status, error, None, "")


@pytest.mark.parametrize(
    ("domain", "error"),
    [
        ("nxdomain.test", "no address for mta-sts.nxdomain.test: the name does not exist (NXDOMAIN)"),
        ("noaddress.test", "mta-sts.noaddress.test has no A or AAAA record"),
    ],
)
async def test_fetch_without_an_address_fails(resolver: DnsResolver, domain: str, error: str) -> None:
    fetched = await fetch_sts_policy(resolver, domain, ssl_context=None)
    assert fetched == FetchedPolicy(f"http://mta-sts.{domain}:443/.well-known/mta-sts.txt", error=error)


async def test_fetch_from_a_closed_port_says_connection_refused(resolver: DnsResolver) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetched = await fetch_sts_policy(resolver, "example.test", port=port)
    assert (
        fetched.error == f"cannot connect to mta-sts.example.test: 127.0.0.1 port {port}: connection refused"
    )
    assert fetched.status is None


async def test_fetch_from_a_server_that_never_answers_times_out(resolver: DnsResolver) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        fetched = await fetch_sts_policy(resolver, "example.test", port=port, ssl_context=None, timeout=0.5)
    assert fetched.error == "timed out after 0.5 s waiting for mta-sts.example.test to answer"


async def test_fetch_over_https_with_a_trusted_certificate(
    resolver: DnsResolver, certificates: dict[str, Certificate]
) -> None:
    certificate = certificates["mta-sts.example.test"]
    listener = await serve(build_admin_app(POLICIES.get), tls=certificate.server_context())
    port = listener.bound[0].port
    try:
        fetched = await fetch_sts_policy(
            resolver, "example.test", port=port, ssl_context=certificate.trusting_context()
        )
    finally:
        await listener.stop(1)
    assert fetched.url == f"https://mta-sts.example.test:{port}/.well-known/mta-sts.txt"
    assert (fetched.status, fetched.error, fetched.policy) == (200, None, parse_sts_policy(POLICY))


TrustChoice = Callable[[dict[str, Certificate]], ssl.SSLContext | None]


@pytest.mark.parametrize(
    ("served", "trust", "error"),
    [
        (
            "www.example.test",
            lambda made: made["www.example.test"].trusting_context(),
            "the TLS certificate of mta-sts.example.test (127.0.0.1 port {port}) is invalid: "
            "Hostname mismatch, certificate is not valid for 'mta-sts.example.test'.",
        ),
        (
            "mta-sts.example.test",
            lambda made: (
                None
            ),  # the default: the system's trust store, which knows no self-signed certificate
            "the TLS certificate of mta-sts.example.test (127.0.0.1 port {port}) is invalid: self",
        ),
        (
            None,  # plain HTTP on the port
            lambda made: made["mta-sts.example.test"].trusting_context(),
            "TLS handshake with mta-sts.example.test (127.0.0.1 port {port}) failed",
        ),
    ],
)
async def test_fetch_over_https_fails_on_certificate_or_handshake(
    resolver: DnsResolver,
    certificates: dict[str, Certificate],
    served: str | None,
    trust: TrustChoice,
    error: str,
) -> None:
    tls = certificates[served].server_context() if served else None
    listener = await serve(build_admin_app(POLICIES.get), tls=tls)
    port = listener.bound[0].port
    context = trust(certificates)
    try:
        if context is None:
            fetched = await fetch_sts_policy(resolver, "example.test", port=port)
        else:
            fetched = await fetch_sts_policy(resolver, "example.test", port=port, ssl_context=context)
    finally:
        await listener.stop(1)
    assert fetched.error is not None and fetched.error.startswith(error.format(port=port)), fetched.error
    assert (fetched.status, fetched.policy) == (None, None)
