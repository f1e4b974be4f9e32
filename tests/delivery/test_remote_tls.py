"""Outbound delivery under a destination's TLS policy, end to end: MTA-STS policies served over HTTPS on
loopback (a test CA trusted through `[mta_sts] ca_file` and `[delivery] tls_ca_file`), DANE TLSA records
in the test DNS with and without AD, and Postroom-run sinks presenting a trusted or an untrusted
certificate. Assertions are on the reply each recipient was settled with and on what the sinks got."""

from __future__ import annotations

import dataclasses
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from postroom.admin import AdminListener, build_admin_app
from postroom.app.setup import write_self_signed
from postroom.config.settings import DeliverySettings, ListenAddress, MtaStsSettings
from postroom.delivery.remote import RemoteDelivery
from postroom.dns import DnsResolver
from postroom.dns.mta_sts import policy_id, render_sts_policy
from postroom.dns.mta_sts_cache import StsPolicyCache
from postroom.model.outbound import DeliveryAttempt, OutboundMessage, OutboundRecipient, RecipientResult
from postroom.storage import FileBlobStore
from tests.support.dns_server import DnsTestServer
from tests.support.scripted_smtp import ScriptedSmtp
from tests.support.sink import SmtpSink, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

GOOD, BAD, BROKEN = "127.0.0.21", "127.0.0.22", "127.0.0.23"  # trusted cert, untrusted cert, broken TLS
POLICIES = {
    "secure.test": render_sts_policy("enforce", ["mx1.secure.test"], 86400),
    "outside.test": render_sts_policy("enforce", ["mx.elsewhere.test"], 86400),
    "badcert.test": render_sts_policy("enforce", ["mx1.badcert.test"], 86400),
    "brokentls.test": render_sts_policy("enforce", ["mx1.brokentls.test"], 86400),
    "testing.test": render_sts_policy("testing", ["mx.elsewhere.test"], 86400),
}
# destination -> the address of its one MX host, mx1.<destination>
MX = {
    "secure.test": GOOD,
    "outside.test": GOOD,
    "badcert.test": BAD,
    "brokentls.test": BROKEN,
    "testing.test": BAD,
    "dane.test": GOOD,
    "danebad.test": GOOD,
    "noad.test": GOOD,
    "daneta.test": GOOD,
    "danepkix.test": BAD,
}


Send = Callable[[str], Awaitable[RecipientResult]]


@dataclasses.dataclass
class Certificates:
    trusted: Path  # PEM: the test CA file; also the certificate of the GOOD sink and the policy host
    trusted_key: Path
    untrusted: Path
    untrusted_key: Path

    def spki_sha256(self, pem: Path) -> str:
        certificate = x509.load_pem_x509_certificate(pem.read_bytes())
        spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(spki).hexdigest()

    def cert_sha256(self, pem: Path) -> str:
        certificate = x509.load_pem_x509_certificate(pem.read_bytes())
        return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    trusted = [f"mx1.{d}" for d, address in MX.items() if address == GOOD] + [
        f"mta-sts.{d}" for d in POLICIES
    ]
    write_self_signed(directory / "ca.pem", directory / "ca.key", trusted)
    untrusted = [f"mx1.{d}" for d, address in MX.items() if address == BAD]
    write_self_signed(directory / "other.pem", directory / "other.key", untrusted)
    return Certificates(
        directory / "ca.pem", directory / "ca.key", directory / "other.pem", directory / "other.key"
    )


@pytest.fixture(scope="module")
def port() -> int:
    return free_port(GOOD)


@pytest.fixture(scope="module")
def dns(port: int, certificates: Certificates) -> Iterator[DnsTestServer]:
    zones = {domain: f"@ MX 10 mx1\nmx1 A {address}\n" for domain, address in MX.items()}
    for domain, text in POLICIES.items():
        zones[domain] += f'mta-sts A 127.0.0.1\n_mta-sts TXT "v=STSv1; id={policy_id(text)}"\n'
    good, bad = (
        certificates.spki_sha256(certificates.trusted),
        certificates.spki_sha256(certificates.untrusted),
    )
    tlsa = {
        "dane.test": f"3 1 1 {good}",  # the sink's own key
        "danebad.test": f"3 1 1 {'ab' * 32}",  # matches nothing
        "noad.test": f"3 1 1 {'ab' * 32}",  # matches nothing, but served without AD
        "daneta.test": f"2 0 1 {certificates.cert_sha256(certificates.trusted)}",  # DANE-TA only
        "danepkix.test": f"3 1 1 {bad}",  # a certificate no CA vouches for, named by DANE
    }
    for domain, record in tlsa.items():
        zones[domain] += f"_{port}._tcp.mx1 TLSA {record}\n"
    with DnsTestServer(zones) as server:
        for domain in tlsa:
            if domain != "noad.test":
                server.set_authenticated(f"_{port}._tcp.mx1.{domain}")
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def https_port(certificates: Certificates) -> AsyncIterator[int]:
    """The policy hosts, mta-sts.<domain>, over HTTPS with the trusted certificate."""
    context = server_context(certificates.trusted, certificates.trusted_key)
    listener = AdminListener(
        build_admin_app(POLICIES.get), (ListenAddress("127.0.0.1", 0),), ssl_context=context
    )
    await listener.start()
    yield listener.bound[0].port
    await listener.stop(1)


class Servers:
    def __init__(self, good: SmtpSink, bad: SmtpSink, broken: ScriptedSmtp) -> None:
        self.good, self.bad, self.broken = good, bad, broken


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(port: int, certificates: Certificates) -> AsyncIterator[Servers]:
    async with (
        SmtpSink(
            GOOD,
            port,
            hostname="good.test",
            tls=server_context(certificates.trusted, certificates.trusted_key),
        ) as good,
        SmtpSink(
            BAD,
            port,
            hostname="bad.test",
            tls=server_context(certificates.untrusted, certificates.untrusted_key),
        ) as bad,
        ScriptedSmtp(BROKEN, port, break_tls=True) as broken,
    ):
        yield Servers(good, bad, broken)


@pytest.fixture(autouse=True)
def fresh(servers: Servers) -> None:
    servers.good.reset()
    servers.bad.reset()
    servers.broken.reset()


@pytest.fixture
def deliver(
    dns: DnsTestServer, port: int, https_port: int, certificates: Certificates, tmp_path: Path
) -> Send:
    blobs = FileBlobStore(tmp_path / "blobs")
    ca = str(certificates.trusted)
    agent = RemoteDelivery(
        DeliverySettings(smtp_port=port, connect_timeout=2.0, command_timeout=5.0, tls_ca_file=ca),
        DnsResolver(dns.settings()),
        blobs,
        helo_name="out.postroom.test",
        max_hops=30,
        sts=StsPolicyCache.from_settings(
            MtaStsSettings(policy_port=https_port, ca_file=ca, fetch_timeout=5.0)
        ),
    )

    async def send(recipient: str) -> RecipientResult:
        content = (
            b"From: alice@contoso.com\r\nTo: " + recipient.encode() + b"\r\nSubject: hi\r\n\r\nHello.\r\n"
        )
        blob_id = blobs.put(content)
        message = OutboundMessage("m1", blob_id, b"", len(content), 0.0, 1)
        domain = recipient.rpartition("@")[2]
        attempt = DeliveryAttempt(
            domain, "alice@contoso.com", message, (OutboundRecipient(1, recipient, recipient, 0),)
        )
        [result] = await agent.deliver([attempt])
        return result

    return send


def code(result: RecipientResult) -> tuple[int, str | None]:
    return result.reply.code, result.reply.enhanced


# --- MTA-STS (RFC 8461)


async def test_enforce_delivers_over_verified_tls_to_a_named_mx(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@secure.test")
    assert code(result) == (250, "2.6.0")
    assert result.remote_host == "mx1.secure.test" and result.tls.startswith("TLSv1")
    [received] = servers.good.messages
    assert received.recipients == ("bob@secure.test",) and received.tls.startswith("TLSv1")


async def test_enforce_defers_an_mx_the_policy_does_not_name(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@outside.test")
    assert code(result) == (451, "4.7.5")
    assert servers.good.connections == 0  # not even tried


async def test_enforce_defers_a_certificate_that_does_not_verify(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@badcert.test")
    assert code(result) == (451, "4.7.5")
    assert servers.bad.connections == 1 and servers.bad.messages == []


async def test_enforce_never_falls_back_to_plaintext(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@brokentls.test")
    assert code(result) == (451, "4.7.5")
    assert len(servers.broken.connections) == 1 and servers.broken.connections[0].starttls
    assert servers.broken.messages == []


async def test_testing_delivers_and_reports_what_enforce_would_refuse(
    deliver: Send, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="postroom.delivery.remote"):
        result = await deliver("bob@testing.test")
    assert code(result) == (250, "2.6.0") and result.tls.startswith("TLSv1")
    assert [m.recipients for m in servers.bad.messages] == [("bob@testing.test",)]
    assert "MTA-STS testing: mx1.testing.test is not in the policy of testing.test" in caplog.text
    assert "MTA-STS testing: the policy of testing.test would refuse this host" in caplog.text
    assert "certificate verify failed" in caplog.text


# --- DANE (RFC 7672)


async def test_dane_ee_matching_the_certificate_delivers(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@dane.test")
    assert code(result) == (250, "2.6.0") and result.tls.startswith("TLSv1")
    assert [m.recipients for m in servers.good.messages] == [("bob@dane.test",)]


async def test_dane_ee_needs_no_certificate_authority(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@danepkix.test")
    assert code(result) == (250, "2.6.0")
    assert [m.recipients for m in servers.bad.messages] == [("bob@danepkix.test",)]


async def test_a_tlsa_mismatch_defers_4_7_323(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@danebad.test")
    assert code(result) == (451, "4.7.323")
    assert servers.good.connections == 1 and servers.good.messages == []


async def test_a_tlsa_answer_without_ad_is_ignored(deliver: Send, servers: Servers) -> None:
    result = await deliver("bob@noad.test")
    assert code(result) == (250, "2.6.0")
    assert [m.recipients for m in servers.good.messages] == [("bob@noad.test",)]


async def test_dane_ta_only_defers_rather_than_delivering_unverified(deliver: Send, servers: Servers) -> None:
    # Python 3.11 exposes only the leaf of an unverified peer, so a DANE-TA(2) record cannot be
    # matched; the message must wait, never go as if the records were not there.
    result = await deliver("bob@daneta.test")
    assert code(result) == (451, "4.7.323")
    assert servers.good.messages == []
