"""DKIM signing of outbound mail: signatures made with the directory's active key verify (dkimpy) against the
TXT records the directory publishes, served by the test DNS server, before and after a rotation."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import dns.resolver
import pytest

from postroom.delivery import NotSigned, sign
from postroom.directory import Directory
from postroom.dns.records import DkimSelector, dkim_record
from postroom.model.outbound import DkimSigner
from postroom.model.scope import OPERATOR
from tests.support.dns_server import DnsTestServer

DOMAIN = "contoso.example"
MESSAGE = (
    b"From: Ann <ann@contoso.example>\r\n"
    b"To: bob@fabrikam.test\r\n"
    b"Cc: carol@fabrikam.test\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@contoso.example>\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"The figures are attached.\r\n"
)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer({DOMAIN: ""}) as server:
        yield server


@pytest.fixture
def org(directory: Directory, dns_server: DnsTestServer) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, DOMAIN, "contoso", verified=True)
    publish(directory, dns_server)
    return directory


def publish(directory: Directory, server: DnsTestServer) -> None:
    """Serve the records `postroom domain dkim show` tells the admin to publish (both selectors)."""
    server.set_zone(DOMAIN, "")
    for key in directory.dkim_keys(OPERATOR, DOMAIN):
        record = dkim_record(DOMAIN, DkimSelector(key.selector, key.public_key, key.active))
        server.add_txt(record.name, record.value)


def signer(directory: Directory) -> DkimSigner:
    selector, pem = directory.dkim_signing_key(OPERATOR, DOMAIN)
    return DkimSigner(DOMAIN, selector, pem)


def verifies(message: bytes, server: DnsTestServer) -> bool:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def txt(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT")
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return bool(dkim.verify(message, dnsfunc=txt))


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    first = header.split("\r\nFrom:", 1)[0]
    assert first.startswith("DKIM-Signature: ")
    value = "".join(first.removeprefix("DKIM-Signature: ").split())
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_signature_verifies_against_the_published_key(org: Directory, dns_server: DnsTestServer) -> None:
    signed = sign(MESSAGE, signer(org))
    assert signed.endswith(MESSAGE)  # the signature is prepended, the message is untouched
    assert verifies(signed, dns_server)
    tags = signature_tags(signed)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == (
        "rsa-sha256",
        "relaxed/relaxed",
        DOMAIN,
        "postroom1",
    )
    assert tags["t"].isdigit() and "l" not in tags
    assert tags["h"].split(":") == ["from", "to", "cc", "subject", "date", "message-id", "from"]


def test_rotation_signs_with_the_new_key_while_the_old_stays_published(
    org: Directory, dns_server: DnsTestServer
) -> None:
    before = sign(MESSAGE, signer(org))
    org.rotate_dkim(OPERATOR, DOMAIN)
    publish(org, dns_server)
    after = sign(MESSAGE, signer(org))
    assert signature_tags(after)["s"] == "postroom2"
    assert verifies(after, dns_server)
    # The retired selector got a fresh key to publish, so mail signed before the rotation no longer
    # verifies once the new record is out: exactly what rotation is for.
    assert not verifies(before, dns_server)


def test_a_changed_body_fails_verification(org: Directory, dns_server: DnsTestServer) -> None:
    signed = sign(MESSAGE, signer(org))
    assert not verifies(signed.replace(b"attached", b"enclosed"), dns_server)


def test_an_added_from_fails_verification(org: Directory, dns_server: DnsTestServer) -> None:
    signed = sign(MESSAGE, signer(org))
    head, body = signed.split(b"\r\n\r\n", 1)
    assert not verifies(head + b"\r\nFrom: ceo@contoso.example\r\n\r\n" + body, dns_server)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"To: bob@fabrikam.test\r\nSubject: no sender\r\n\r\nbody\r\n", "no From header field"),
        (b"From: a@contoso.example\r\nFrom: b@contoso.example\r\n\r\nbody\r\n", "several From header fields"),
    ],
)
def test_a_message_without_exactly_one_from_is_not_signed(
    org: Directory, message: bytes, reason: str
) -> None:
    with pytest.raises(NotSigned, match=reason):
        sign(message, signer(org))


def test_an_unusable_key_is_not_signed() -> None:
    with pytest.raises(NotSigned, match="signing key cannot be read"):
        sign(
            MESSAGE,
            DkimSigner(DOMAIN, "postroom1", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        )
