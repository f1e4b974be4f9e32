"""The outbound TLS policy: MTA-STS over real HTTPS (a test CA) and the policy cache's RFC 8461 rules,
DANE records only from authenticated TLSA answers (the test DNS server sets AD), and `verify_dane` against
real certificate chains, including the attacker's cases."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from postroom.admin import AdminListener, build_admin_app
from postroom.app.setup import write_self_signed
from postroom.config.settings import ListenAddress, MtaStsSettings
from postroom.delivery import TlsMode, TlsPolicyFailure, outbound_tls_policy, verify_dane
from postroom.dns import DnsResolver, TlsaRecord
from postroom.dns.mta_sts import (
    MAX_POLICY_SIZE,
    POLICY_PATH,
    FetchedPolicy,
    parse_sts_policy,
    policy_id,
    render_sts_policy,
)
from postroom.dns.mta_sts_cache import StsPolicyCache, StsSource
from postroom.model.replies import (
    DANE_FAILED,
    MESSAGE_EXPIRED,
    TLS_POLICY_FAILED,
    TLS_POLICY_RETRY_PERIOD,
    retry_period,
)
from tests.support.dns_server import DnsTestServer

ENFORCE = render_sts_policy("enforce", ["mx1.secure.test", "*.mx.secure.test"], 86400)
TESTING = render_sts_policy("testing", ["mx1.testing.test"], 86400)
POLICIES = {"secure.test": ENFORCE, "testing.test": TESTING, "untrusted.test": ENFORCE}
LARGE = "x" * (MAX_POLICY_SIZE + 1)

ZONES = {
    "secure.test": f'mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id={policy_id(ENFORCE)}"\n',
    "testing.test": f'mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id={policy_id(TESTING)}"\n',
    "untrusted.test": 'mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id=1"\n',
    "large.test": 'mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id=1"\n',
    "plain.test": "",
    "dane.test": "",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer(ZONES) as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The test CA: a certificate for every policy host (self-signed, trusted through `ca_file`)."""
    directory = tmp_path_factory.mktemp("sts")
    names = [f"mta-sts.{domain}" for domain in ("secure.test", "testing.test", "large.test")]
    write_self_signed(directory / "cert.pem", directory / "key.pem", names)
    return directory / "cert.pem", directory / "key.pem"


@pytest.fixture
async def https_port(certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    """Policy hosts over HTTPS: the admin app for the policies, a body too large for large.test."""
    import ssl

    admin = build_admin_app(POLICIES.get)

    async def large(request: Request) -> Response:
        return Response(LARGE, media_type="text/plain")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        host = dict(scope.get("headers", [])).get(b"host", b"").decode()
        target = (
            Starlette(routes=[Route(POLICY_PATH, large)]) if host.startswith("mta-sts.large.test") else admin
        )
        await target(scope, receive, send)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    listener = AdminListener(app, (ListenAddress("127.0.0.1", 0),), ssl_context=context)
    await listener.start()
    yield listener.bound[0].port
    await listener.stop(1)


@pytest.fixture
def resolver(dns_server: DnsTestServer) -> DnsResolver:
    return DnsResolver(dns_server.settings())


def cache_for(port: int, certificate: tuple[Path, Path], clock: Clock | None = None) -> StsPolicyCache:
    settings = MtaStsSettings(policy_port=port, ca_file=str(certificate[0]), fetch_timeout=5.0)
    return StsPolicyCache.from_settings(settings, clock=clock or Clock())


async def test_enforce_policy_names_the_allowed_mx_hosts(
    resolver: DnsResolver, https_port: int, certificate: tuple[Path, Path]
) -> None:
    policy = await outbound_tls_policy(
        resolver,
        "Secure.Test.",
        ["mx1.secure.test", "a.mx.secure.test", "evil.test"],
        sts=cache_for(https_port, certificate),
    )
    assert policy.mode is TlsMode.MTA_STS_ENFORCE and policy.sts.source is StsSource.FETCHED
    assert [
        policy.allows(h) for h in ("MX1.secure.test", "a.mx.secure.test", "evil.test", "b.a.mx.secure.test")
    ] == [
        True,
        True,
        False,
        False,
    ]
    assert policy.tls_required("mx1.secure.test")


async def test_testing_policy_delivers_but_reports(
    resolver: DnsResolver, https_port: int, certificate: tuple[Path, Path]
) -> None:
    policy = await outbound_tls_policy(
        resolver, "testing.test", ["other.test"], sts=cache_for(https_port, certificate)
    )
    assert policy.mode is TlsMode.MTA_STS_TESTING
    assert policy.allows("other.test") and not policy.would_allow("other.test")
    assert not policy.tls_required("other.test")


async def test_no_txt_record_is_opportunistic(
    resolver: DnsResolver, https_port: int, certificate: tuple[Path, Path]
) -> None:
    policy = await outbound_tls_policy(
        resolver, "plain.test", ["mx.plain.test"], sts=cache_for(https_port, certificate)
    )
    assert policy.mode is TlsMode.OPPORTUNISTIC and policy.allows("anything.test")
    assert policy.sts.problem == "_mta-sts.plain.test does not exist"


async def test_a_policy_over_an_untrusted_certificate_is_not_used(
    resolver: DnsResolver, https_port: int, certificate: tuple[Path, Path]
) -> None:
    # untrusted.test's policy host presents a certificate that is not valid for its name.
    policy = await outbound_tls_policy(
        resolver, "untrusted.test", ["evil.test"], sts=cache_for(https_port, certificate)
    )
    assert policy.mode is TlsMode.OPPORTUNISTIC and policy.allows("evil.test")
    assert "certificate" in policy.sts.problem and "invalid" in policy.sts.problem


async def test_without_the_test_ca_the_policy_is_not_used(resolver: DnsResolver, https_port: int) -> None:
    cache = StsPolicyCache.from_settings(MtaStsSettings(policy_port=https_port))  # system trust only
    policy = await outbound_tls_policy(resolver, "secure.test", ["evil.test"], sts=cache)
    assert policy.mode is TlsMode.OPPORTUNISTIC and "certificate" in policy.sts.problem


async def test_an_oversized_policy_is_refused(
    resolver: DnsResolver, https_port: int, certificate: tuple[Path, Path]
) -> None:
    lookup = await cache_for(https_port, certificate).lookup(resolver, "large.test")
    assert lookup.policy is None and f"larger than {MAX_POLICY_SIZE} octets" in lookup.problem


# -- the cache's rules, with a fetch twin that counts (the HTTPS fetch itself is tested above)


class Fetches:
    def __init__(self, policies: dict[str, str]) -> None:
        self.policies = policies
        self.count = 0
        self.delay = 0.0

    async def __call__(self, resolver: object, domain: str) -> FetchedPolicy:
        self.count += 1
        await asyncio.sleep(self.delay)
        text = self.policies.get(domain)
        if text is None:
            return FetchedPolicy(f"https://mta-sts.{domain}{POLICY_PATH}", error="connection refused")
        return FetchedPolicy(
            f"https://mta-sts.{domain}{POLICY_PATH}", 200, "text/plain", text, parse_sts_policy(text)
        )


@pytest.fixture
def zone(dns_server: DnsTestServer) -> Iterator[str]:
    dns_server.set_zone("cache.test", f'_mta-sts IN TXT "v=STSv1; id={policy_id(ENFORCE)}"\n')
    yield "cache.test"
    dns_server.remove_zone("cache.test")


async def test_cached_policy_is_used_until_the_id_changes(dns_server: DnsTestServer, zone: str) -> None:
    resolver = DnsResolver(replace(dns_server.settings(), cache_size=0))
    fetches, clock = Fetches({zone: ENFORCE}), Clock()
    cache = StsPolicyCache(fetches, clock=clock)
    assert (await cache.lookup(resolver, zone)).source is StsSource.FETCHED
    assert (await cache.lookup(resolver, zone)).source is StsSource.CACHED
    assert fetches.count == 1
    dns_server.remove_records(f"_mta-sts.{zone}", "TXT")
    dns_server.add_txt(f"_mta-sts.{zone}", f"v=STSv1; id={policy_id(TESTING)}")
    fetches.policies[zone] = TESTING
    lookup = await cache.lookup(resolver, zone)
    assert (lookup.source, lookup.policy, fetches.count) == (StsSource.FETCHED, parse_sts_policy(TESTING), 2)


async def test_a_policy_whose_txt_vanished_is_honoured_until_max_age(
    dns_server: DnsTestServer, zone: str
) -> None:
    resolver = DnsResolver(replace(dns_server.settings(), cache_size=0))
    clock = Clock()
    cache = StsPolicyCache(Fetches({zone: ENFORCE}), clock=clock)
    await cache.lookup(resolver, zone)
    dns_server.remove_records(f"_mta-sts.{zone}", "TXT")
    clock.now += 86399
    kept = await cache.lookup(resolver, zone)
    assert (kept.source, kept.policy) == (StsSource.KEPT, parse_sts_policy(ENFORCE))
    clock.now += 1
    gone = await cache.lookup(resolver, zone)
    assert (gone.source, gone.policy) == (StsSource.NONE, None)


async def test_a_failed_refetch_keeps_the_enforce_policy_and_is_not_retried_at_once(
    dns_server: DnsTestServer, zone: str
) -> None:
    resolver = DnsResolver(replace(dns_server.settings(), cache_size=0))
    fetches, clock = Fetches({zone: ENFORCE}), Clock()
    cache = StsPolicyCache(fetches, clock=clock, fetch_retry=300)
    await cache.lookup(resolver, zone)
    dns_server.remove_records(f"_mta-sts.{zone}", "TXT")
    dns_server.add_txt(f"_mta-sts.{zone}", "v=STSv1; id=changed")
    del fetches.policies[zone]  # an attacker blocks the policy host
    kept = await cache.lookup(resolver, zone)
    assert (kept.source, kept.policy, fetches.count) == (StsSource.KEPT, parse_sts_policy(ENFORCE), 2)
    assert "connection refused" in kept.problem
    await cache.lookup(resolver, zone)
    assert fetches.count == 2  # within fetch_retry: no new fetch
    clock.now += 300
    await cache.lookup(resolver, zone)
    assert fetches.count == 3


async def test_concurrent_lookups_share_one_fetch(dns_server: DnsTestServer, zone: str) -> None:
    resolver = DnsResolver(dns_server.settings())
    fetches = Fetches({zone: ENFORCE})
    fetches.delay = 0.05
    cache = StsPolicyCache(fetches)
    results = await asyncio.gather(*(cache.lookup(resolver, zone) for _ in range(10)))
    assert fetches.count == 1 and {r.policy for r in results} == {parse_sts_policy(ENFORCE)}


@pytest.mark.parametrize(
    "records",
    [
        ["v=STSv1; id=a", "v=STSv1; id=b"],  # two: no MTA-STS (RFC 8461 §3.1)
        ["v=STSv1; id=not valid!"],
    ],
)
async def test_unusable_txt_records_mean_no_policy(
    dns_server: DnsTestServer, zone: str, records: list[str]
) -> None:
    dns_server.remove_records(f"_mta-sts.{zone}", "TXT")
    for record in records:
        dns_server.add_txt(f"_mta-sts.{zone}", record)
    fetches = Fetches({zone: ENFORCE})
    lookup = await StsPolicyCache(fetches).lookup(DnsResolver(dns_server.settings()), zone)
    assert (lookup.policy, fetches.count) == (None, 0)


# -- DANE: TLSA from the DNS, and certificate chains


def make_certificate(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    names: tuple[str, ...] = (),
    ca: bool = False,
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    start, end = (
        (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        if expired
        else (
            now - datetime.timedelta(days=1),
            now + datetime.timedelta(days=30),
        )
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def pki() -> dict[str, x509.Certificate]:
    root, root_key = make_certificate("Test Root", ca=True)
    issuer = (root.subject, root_key)
    leaf, _ = make_certificate("mx.dane.test", issuer, names=("mx.dane.test",))
    wildcard, _ = make_certificate("wild", issuer, names=("*.dane.test",))
    expired, _ = make_certificate("mx.dane.test", issuer, names=("mx.dane.test",), expired=True)
    other_root, other_key = make_certificate("Other Root", ca=True)
    foreign, _ = make_certificate("mx.dane.test", (root.subject, other_key), names=("mx.dane.test",))
    return {
        "root": root,
        "leaf": leaf,
        "wildcard": wildcard,
        "expired": expired,
        "other_root": other_root,
        "foreign": foreign,
    }


def test_dane_ee_matches_the_leaf_by_key_or_certificate(pki: dict[str, x509.Certificate]) -> None:
    leaf = pki["leaf"]
    chain = [der(leaf), der(pki["root"])]
    for record in (
        TlsaRecord(3, 1, 1, hashlib.sha256(spki(leaf)).digest()),
        TlsaRecord(3, 0, 1, hashlib.sha256(der(leaf)).digest()),
        TlsaRecord(3, 1, 2, hashlib.sha512(spki(leaf)).digest()),
    ):
        assert verify_dane(chain, [record], "any.name.test"), record  # DANE-EE checks no name
    # DANE-EE ignores validity dates (RFC 7672 §3.1.1).
    assert verify_dane(
        [der(pki["expired"])], [TlsaRecord(3, 1, 1, hashlib.sha256(spki(pki["expired"])).digest())], "x"
    )


def test_a_tlsa_mismatch_fails(pki: dict[str, x509.Certificate]) -> None:
    leaf = pki["leaf"]
    wrong = [
        TlsaRecord(3, 1, 1, hashlib.sha256(spki(pki["root"])).digest()),  # another certificate's key
        TlsaRecord(3, 1, 1, hashlib.sha256(spki(leaf)).digest()[:-1] + b"\0"),
        TlsaRecord(1, 1, 1, hashlib.sha256(spki(leaf)).digest()),  # PKIX-EE: not for SMTP
        TlsaRecord(3, 2, 1, hashlib.sha256(spki(leaf)).digest()),  # unknown selector
        TlsaRecord(3, 1, 9, hashlib.sha256(spki(leaf)).digest()),  # unknown matching type
    ]
    for record in wrong:
        assert not verify_dane([der(leaf)], [record], "mx.dane.test"), record
    assert not verify_dane([], [TlsaRecord(3, 1, 1, hashlib.sha256(spki(leaf)).digest())], "mx.dane.test")
    assert not verify_dane(
        [b"not a certificate"], [TlsaRecord(3, 0, 0, b"not a certificate")], "mx.dane.test"
    )


@pytest.mark.parametrize(
    ("leaf", "host", "ok"),
    [
        ("leaf", "mx.dane.test", True),
        ("leaf", "MX.Dane.Test.", True),
        ("leaf", "other.dane.test", False),  # usage 2 checks the name
        ("wildcard", "mx.dane.test", True),
        ("wildcard", "a.mx.dane.test", False),  # a wildcard is one label
        ("expired", "mx.dane.test", False),  # usage 2 checks the dates
        ("foreign", "mx.dane.test", False),  # claims the root as issuer, signed by another key
    ],
)
def test_dane_ta_needs_a_signed_path_to_the_anchor_and_the_name(
    pki: dict[str, x509.Certificate], leaf: str, host: str, ok: bool
) -> None:
    record = TlsaRecord(2, 0, 1, hashlib.sha256(der(pki["root"])).digest())
    assert verify_dane([der(pki[leaf]), der(pki["root"])], [record], host) is ok


def test_dane_ta_needs_the_anchor_in_the_chain(pki: dict[str, x509.Certificate]) -> None:
    record = TlsaRecord(2, 1, 1, hashlib.sha256(spki(pki["root"])).digest())
    assert verify_dane([der(pki["leaf"]), der(pki["root"])], [record], "mx.dane.test")
    assert not verify_dane([der(pki["leaf"])], [record], "mx.dane.test")
    other = TlsaRecord(2, 1, 1, hashlib.sha256(spki(pki["other_root"])).digest())
    assert not verify_dane([der(pki["leaf"]), der(pki["other_root"])], [other], "mx.dane.test")


TLSA = "3 1 1 " + "ab" * 32


async def test_tlsa_only_when_authenticated(dns_server: DnsTestServer) -> None:
    dns_server.set_zone(
        "dane.test",
        f"_25._tcp.mx1 IN TLSA {TLSA}\n_25._tcp.mx1 IN TLSA 1 1 1 {'cd' * 32}\n_25._tcp.mx2 IN TLSA {TLSA}\n",
    )
    dns_server.set_authenticated("_25._tcp.mx1.dane.test")
    resolver = DnsResolver(dns_server.settings())
    answer = await resolver.tlsa("_25._tcp.mx1.dane.test")
    assert answer.authenticated and len(answer.records) == 2
    unauthenticated = await resolver.tlsa("_25._tcp.mx2.dane.test")
    assert not unauthenticated.authenticated and len(unauthenticated.records) == 1
    policy = await outbound_tls_policy(
        resolver,
        "dane.test",
        ["mx1.dane.test", "mx2.dane.test", "mx3.dane.test"],
        sts=StsPolicyCache(Fetches({})),
    )
    assert policy.tlsa("mx1.dane.test") == (TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32)),)  # usage 1 dropped
    assert policy.tls_required("mx1.dane.test")
    assert policy.tlsa("mx2.dane.test") == () and not policy.tls_required("mx2.dane.test")  # no AD: ignored
    assert policy.tlsa("mx3.dane.test") == () and policy.dane_unavailable("mx3.dane.test") == ""
    assert policy.mode is TlsMode.OPPORTUNISTIC


async def test_a_failed_tlsa_lookup_makes_the_host_unavailable(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("dane.test", f"_25._tcp.mx1 IN TLSA {TLSA}\n")
    dns_server.set_failure("_25._tcp.mx1.dane.test", "SERVFAIL")
    try:
        policy = await outbound_tls_policy(
            DnsResolver(dns_server.settings()),
            "dane.test",
            ["mx1.dane.test"],
            sts=StsPolicyCache(Fetches({})),
        )
    finally:
        dns_server.set_failure("_25._tcp.mx1.dane.test", None)
    assert "TLSA _25._tcp.mx1.dane.test" in policy.dane_unavailable("mx1.dane.test")


def test_tls_policy_failures_retry_for_a_day() -> None:
    for failure in (TlsPolicyFailure.mta_sts("no MX host matches"), TlsPolicyFailure.dane("mx1.dane.test")):
        assert failure.retry_for == TLS_POLICY_RETRY_PERIOD == 86_400
        assert retry_period(failure.reply) == 86_400
    assert TlsPolicyFailure.mta_sts("x").reply.enhanced == TLS_POLICY_FAILED.enhanced
    assert TlsPolicyFailure.dane("x").reply.enhanced == DANE_FAILED.enhanced
    assert retry_period(MESSAGE_EXPIRED) is None
