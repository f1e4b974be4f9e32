"""MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, and a fetcher that diagnoses both.

A domain publishes MTA-STS in two places: a TXT record at `_mta-sts.<domain>` (`v=STSv1; id=...`) that
says a policy exists and names its version, and the policy itself, a short text file served over HTTPS
at `https://mta-sts.<domain>/.well-known/mta-sts.txt`. Postroom writes both for the domains it hosts
(`render_sts_policy`, `policy_id`) and checks what a domain actually publishes (`parse_sts_txt`,
`parse_sts_policy`, `fetch_sts_policy`).

Guarantees. The parsers follow the ABNF of RFC 8461 §3.1 and §3.2 and raise `MtaStsError` (a
ValueError) whose message names the field or key and says what is wrong, in words an admin can act on;
they never return a half-parsed value. Two lenient points, both harmless: blank lines in a policy are
skipped, and a policy in mode `none` may list no `mx` (RFC 8461 §3.2 requires `mx` only for the other
modes). `render_sts_policy` only renders what `parse_sts_policy` accepts, so the text served always
parses. `policy_id` depends only on the policy text, so the TXT record's id changes exactly when the
policy does (senders refetch a cached policy only when the id changes, §3.3).

`fetch_sts_policy` is the HTTPS GET a sending MTA makes, with httpx: the host `mta-sts.<domain>` is
resolved through Postroom's `Resolver` (the resolver seam, so labs and tests answer from their own DNS
server), httpx connects to the address chosen, and the host name is sent as `Host` and, over TLS, as SNI
and the name the certificate must be valid for (httpcore's `sni_hostname` extension). It returns a
`FetchedPolicy` whatever happens on the network; its `error` says what went wrong (no address, refused
connection, invalid certificate and for which host name, timeout, HTTP status, content type, redirect,
policy syntax). Only programming errors raise.

*Security:* everything fetched is untrusted. The response head is bounded by h11 (httpx's HTTP/1.1
parser), the body by `MAX_POLICY_SIZE` (as RFC 8461 §3.3 allows a sender to cap it), and the whole
fetch by a timeout. Redirects are reported, never followed (§3.3); no proxy is taken from the
environment. The certificate is verified against the system's trust store for the host name
`mta-sts.<domain>` unless the caller passes its own context (or `None` for plain HTTP, used by labs and
tests). The body is only parsed, never evaluated; TXT records and policy text are typed into frozen
values.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import functools
import hashlib
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import httpx

from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver

MAX_AGE_LIMIT = 31_557_600  # seconds (one year): the largest max_age RFC 8461 §3.2 allows
MAX_ID_LENGTH = 32  # alphanumerics in the TXT record's id (RFC 8461 §3.1)
POLICY_ID_LENGTH = 20  # hex digits of SHA-256 that `policy_id` keeps
MAX_POLICY_SIZE = 64 * 1024  # octets of policy body read at most (RFC 8461 §3.3 lets senders cap it)
POLICY_PATH = "/.well-known/mta-sts.txt"
MODES = ("enforce", "testing", "none")


class MtaStsError(ValueError):
    """A TXT record or policy that does not follow RFC 8461; the message says what and where."""


# -- the TXT record (RFC 8461 §3.1)

_TXT_FIELD_DELIM = re.compile(r"[ \t]*;[ \t]*")
_TXT_ID = re.compile(rf"[A-Za-z0-9]{{1,{MAX_ID_LENGTH}}}", re.ASCII)
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
_TXT_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class StsTxt:
    """A parsed `_mta-sts` TXT record: the policy id, and any extension fields in order."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


def parse_sts_txt(text: str) -> StsTxt:
    """Parse `v=STSv1; id=<1-32 alphanumerics>[; ext=value ...]`; raises MtaStsError saying what is wrong."""
    if not text.startswith("v=STSv1"):
        raise MtaStsError(f"the record must start with v=STSv1 (found {text[:20]!r})")
    rest = text[len("v=STSv1") :]
    if rest and not _TXT_FIELD_DELIM.match(rest):
        raise MtaStsError("v=STSv1 must be followed by ';' and the id field")
    fields = _TXT_FIELD_DELIM.split(rest)[1:]
    if fields and fields[-1] == "":
        fields.pop()  # one trailing delimiter is allowed
    policy_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for field in fields:
        name, equals, value = field.partition("=")
        if not field:
            raise MtaStsError("empty field: two ';' in a row")
        if not equals:
            raise MtaStsError(f"field {field!r} is not name=value")
        if name == "id":
            if policy_id is not None:
                raise MtaStsError("id appears more than once")
            if not _TXT_ID.fullmatch(value):
                raise MtaStsError(f"id {value!r} must be 1 to {MAX_ID_LENGTH} letters and digits")
            policy_id = value
        elif name == "v":
            raise MtaStsError("v appears more than once")
        elif not _EXT_NAME.fullmatch(name):
            raise MtaStsError(f"field name {name!r} must be letters, digits, '_', '-' or '.', 32 at most")
        elif not _TXT_EXT_VALUE.fullmatch(value):
            raise MtaStsError(f"value of {name} must be printable, without spaces, '=' or ';'")
        else:
            extensions.append((name, value))
    if policy_id is None:
        raise MtaStsError("the id field is missing (e.g. v=STSv1; id=20260101T000000)")
    return StsTxt(policy_id, tuple(extensions))


# -- the policy file (RFC 8461 §3.2)

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}", re.ASCII | re.IGNORECASE)
_POLICY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
_MAX_AGE = re.compile(r"[0-9]{1,10}", re.ASCII)


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy: its mode, its `mx` patterns (lower-case, as listed) and max_age in seconds."""

    mode: str
    mx: tuple[str, ...]
    max_age: int

    def matches(self, host: str) -> bool:
        """Whether MX host `host` is allowed by a pattern (RFC 8461 §4.1): exactly, case-insensitively, or
        by a `*.` wildcard standing for exactly one leftmost label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, parent = host.partition(".")
                if label and dot and parent == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def _mx_pattern(value: str) -> str:
    if not value.isascii():
        raise MtaStsError(f"mx {value!r} must be written in ASCII (A-labels: xn--...)")
    if not _MX_PATTERN.fullmatch(value) or len(value) > 253:
        if "*" in value:
            raise MtaStsError(f"mx {value!r}: a wildcard is allowed only as the whole leftmost label (*.)")
        raise MtaStsError(f"mx {value!r} is not a host name")
    return value.lower()


def parse_sts_policy(text: str) -> StsPolicy:
    """Parse a policy file (CRLF or LF lines); raises MtaStsError naming the key and what is wrong."""
    values: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r").rstrip(" \t")
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon or not _POLICY_KEY.fullmatch(key):
            raise MtaStsError(f"line {number} ({line[:40]!r}) is not `key: value`")
        value = value.lstrip(" \t")
        if key == "mx":
            mx.append(_mx_pattern(value))
        elif key in ("version", "mode", "max_age"):
            if key in values:
                raise MtaStsError(f"{key} appears more than once")
            values[key] = value
        # Other keys are extensions (§3.2): ignored, so a newer policy still parses.
    for key in ("version", "mode", "max_age"):
        if key not in values:
            raise MtaStsError(f"{key} is missing")
    if values["version"] != "STSv1":
        raise MtaStsError(f"version must be STSv1, not {values['version']!r}")
    mode = values["mode"]
    if mode not in MODES:
        raise MtaStsError(f"mode must be enforce, testing or none, not {mode!r}")
    if not _MAX_AGE.fullmatch(values["max_age"]) or int(values["max_age"]) > MAX_AGE_LIMIT:
        raise MtaStsError(
            f"max_age must be whole seconds from 0 to {MAX_AGE_LIMIT}, not {values['max_age']!r}"
        )
    if not mx and mode != "none":
        raise MtaStsError(f"mx is missing: mode {mode} needs at least one mx pattern")
    return StsPolicy(mode, tuple(mx), int(values["max_age"]))


def render_sts_policy(mode: str, mx: Sequence[str], max_age: int) -> str:
    """The policy file for these values, exactly as served (CRLF lines); MtaStsError if one is invalid."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {pattern}" for pattern in mx), f"max_age: {max_age}"]
    text = "".join(f"{line}\r\n" for line in lines)
    parse_sts_policy(text)  # what is served must parse: a bad value raises here, not at the sender
    return text


def policy_id(policy_text: str) -> str:
    """The id for the TXT record: the first 20 hex digits of the SHA-256 of the policy text."""
    return hashlib.sha256(policy_text.encode("utf-8")).hexdigest()[:POLICY_ID_LENGTH]


# -- fetching the policy (RFC 8461 §3.3)


class SystemTrust(enum.Enum):
    """The default TLS setting of `fetch_sts_policy`: verify against the system's trust store."""

    VERIFY = "verify"


SYSTEM_TRUST = SystemTrust.VERIFY


@functools.cache
def _system_context() -> ssl.SSLContext:
    # Made on first use, not at import: loading the trust store costs time most imports never need.
    return ssl.create_default_context()


@dataclass(frozen=True, slots=True)
class FetchedPolicy:
    """What fetching a domain's policy gave: `policy` when it was served correctly, else `error`.

    `status` is the HTTP status (None when no response came), `content_type` the header as sent, `text`
    the body of a 200 response (empty otherwise).
    """

    url: str
    status: int | None = None
    content_type: str | None = None
    text: str = ""
    policy: StsPolicy | None = None
    error: str | None = None


class _FetchFailed(Exception):
    """Ends a fetch early; the message is the admin-readable `FetchedPolicy.error`."""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: dict[str, str]  # lower-case names; the first of repeated headers
    body: bytes


async def fetch_sts_policy(
    resolver: Resolver,
    domain: str,
    *,
    port: int = 443,
    ssl_context: ssl.SSLContext | SystemTrust | None = SYSTEM_TRUST,
    timeout: float = 10.0,
) -> FetchedPolicy:
    """GET `https://mta-sts.<domain>/.well-known/mta-sts.txt` as a sender would, and check the answer.

    The host is resolved through `resolver` (A, then AAAA when there is no A record), and httpx is sent
    to each address in turn, until one accepts the connection, with the host name as `Host` and, over
    TLS, as SNI and the name the certificate is checked for (httpcore's `sni_hostname`). TLS uses
    `ssl_context` (by default the system's trust store); `None` means plain HTTP (labs and tests). The
    response must be 200 with `Content-Type: text/plain` (§3.2), a redirect is not followed (§3.3), and
    the body must be a valid policy of at most `MAX_POLICY_SIZE` octets. `timeout` bounds the whole
    fetch, DNS included. Never raises for DNS or network trouble: the result's `error` says what went
    wrong.
    """
    host = f"mta-sts.{domain.lower().rstrip('.')}"
    tls = _system_context() if isinstance(ssl_context, SystemTrust) else ssl_context
    scheme, default_port = ("https", 443) if tls is not None else ("http", 80)
    authority = host if port == default_port else f"{host}:{port}"
    url = f"{scheme}://{authority}{POLICY_PATH}"
    stage = [f"resolving {host}"]  # what the fetch is doing, for a timeout's message
    try:
        async with asyncio.timeout(timeout):
            addresses = await _addresses(resolver, host)
            response = await _get(host, authority, addresses, port, tls, timeout, stage)
    except (TimeoutError, httpx.TimeoutException):
        return FetchedPolicy(url, error=f"timed out after {timeout:g} s {stage[0]}")
    except _FetchFailed as failure:
        return FetchedPolicy(url, error=str(failure))
    return _judge(url, response)


async def _addresses(resolver: Resolver, host: str) -> list[IPv4Address | IPv6Address]:
    problem = f"{host} has no A or AAAA record"
    for lookup in (resolver.a, resolver.aaaa):  # AAAA only when there is no A
        try:
            addresses: list[IPv4Address | IPv6Address] = [*await lookup(host)]
        except NxDomain:
            raise _FetchFailed(f"no address for {host}: the name does not exist (NXDOMAIN)") from None
        except DnsTemporaryError as error:
            problem = f"no address for {host}: {error}"
            continue
        if addresses:
            return addresses
    raise _FetchFailed(problem)


async def _get(
    host: str,
    authority: str,
    addresses: list[IPv4Address | IPv6Address],
    port: int,
    tls: ssl.SSLContext | None,
    timeout: float,
    stage: list[str],
) -> _Response:
    """The response from the first address that takes the connection."""

    async def trace(event: str, info: Mapping[str, object]) -> None:
        if event == "connection.connect_tcp.started":
            stage[0] = f"connecting to {host}"
        elif event == "connection.start_tls.started":
            stage[0] = f"in the TLS handshake with {host}"
        elif event == "http11.send_request_headers.started":
            stage[0] = f"waiting for {host} to answer"

    # No proxy from the environment (the address is ours to choose); over plain HTTP no context is used.
    async with httpx.AsyncClient(
        verify=tls if tls is not None else False,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    ) as client:
        failures: list[str] = []
        for address in addresses:
            where = f"{host} ({address} port {port})"
            literal = f"[{address}]" if address.version == 6 else str(address)
            try:
                async with client.stream(
                    "GET",
                    f"{'https' if tls is not None else 'http'}://{literal}:{port}{POLICY_PATH}",
                    headers={
                        "Host": authority,
                        "User-Agent": "Postroom MTA-STS check",
                        "Accept": "text/plain",
                        "Accept-Encoding": "identity",
                    },
                    extensions={"sni_hostname": host, "trace": trace},
                ) as response:
                    body = await _read_body(response, host) if response.status_code == 200 else b""
                    sent = reversed(response.headers.multi_items())  # the first of repeated ones wins
                    headers = {name.lower(): value for name, value in sent}
                    return _Response(response.status_code, headers, body)
            except httpx.ConnectError as error:
                cause = _root_cause(error)
                if isinstance(cause, ssl.SSLCertVerificationError):
                    # A certificate problem is the answer, not a reason to try the next address.
                    raise _FetchFailed(
                        f"the TLS certificate of {where} is invalid: {cause.verify_message}"
                    ) from None
                if isinstance(cause, ssl.SSLError):
                    raise _FetchFailed(f"TLS handshake with {where} failed: {cause.reason}") from None
                if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
                    failures.append(f"{address} port {port}: connection refused")
                else:
                    failures.append(f"{address} port {port}: {cause}")
            except httpx.TimeoutException:
                raise
            except httpx.RemoteProtocolError:
                raise _FetchFailed(f"{host} closed the connection before a complete HTTP response") from None
            except httpx.HTTPError as error:
                raise _FetchFailed(f"connection to {host} failed during the request: {error}") from None
        raise _FetchFailed(f"cannot connect to {host}: {'; '.join(failures)}")


def _root_cause(error: BaseException) -> BaseException:
    """The exception httpx, httpcore and anyio wrapped (each raises its own while handling the one below,
    `from` it or not)."""
    while True:
        below = error.__cause__ or error.__context__
        if below is None:
            return error
        error = below


async def _read_body(response: httpx.Response, host: str) -> bytes:
    too_big = _FetchFailed(f"the policy from {host} is larger than {MAX_POLICY_SIZE} octets")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_POLICY_SIZE:
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > MAX_POLICY_SIZE:
            raise too_big
    return bytes(body)


def _judge(url: str, response: _Response) -> FetchedPolicy:
    content_type = response.headers.get("content-type")
    if 300 <= response.status < 400:
        location = response.headers.get("location", "(no Location)")
        return FetchedPolicy(
            url,
            response.status,
            content_type,
            error=f"HTTP {response.status} redirect to {location}: senders do not follow redirects "
            "(RFC 8461 §3.3); serve the policy at this URL",
        )
    if response.status != 200:
        return FetchedPolicy(
            url, response.status, content_type, error=f"HTTP status {response.status} instead of 200"
        )
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "text/plain":
        return FetchedPolicy(
            url,
            response.status,
            content_type,
            error=f"Content-Type is {content_type or '(none)'}; RFC 8461 §3.2 requires text/plain",
        )
    try:
        text = response.body.decode("utf-8")
    except UnicodeDecodeError:
        return FetchedPolicy(url, response.status, content_type, error="the policy is not UTF-8 text")
    try:
        policy = parse_sts_policy(text)
    except MtaStsError as error:
        return FetchedPolicy(url, response.status, content_type, text, error=f"policy syntax: {error}")
    return FetchedPolicy(url, response.status, content_type, text, policy)
