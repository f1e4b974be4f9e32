"""Client certificates on a STARTTLS listener that asks for one (the MX role, inbound connectors by
certificate): what the session is told of a verified certificate, of none, and what becomes of a
certificate that does not verify. Real TLS on loopback, smtplib as the client, a test CA."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

import pytest

from postroom.model.connectors import certificate_names
from tests.support.pki import Issued, TestCa, untrusted

from .conftest import CertificateFiles
from .harness import serving
from .twin import MemoryPostOffice

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: hello\r\nFrom: app@contoso.com\r\n\r\nHi.\r\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("pki"))


def asking_context(certificate_files: CertificateFiles, ca: TestCa) -> ssl.SSLContext:
    """A server context as `app.startup.mx_tls_context` builds it with a `client_ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_files.certificate, certificate_files.key)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(ca.certificate))
    return context


def client_context(certificate_files: CertificateFiles, presented: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate_files.certificate))
    context.check_hostname = False
    if presented is not None:
        context.load_cert_chain(presented.certificate, presented.key)
    return context


def send(port: int, context: ssl.SSLContext) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("onprem.contoso.com")
        client.starttls(context=context)
        client.ehlo("onprem.contoso.com")
        client.sendmail("app@contoso.com", ["bob@postroom.test"], MESSAGE)


async def test_a_verified_client_certificate_reaches_the_session(
    office: MemoryPostOffice, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    issued = ca.issue("onprem", ("mail.contoso.com", "*.contoso.com"), organization="Contoso")
    async with serving(office, ssl_context=asking_context(certificate_files, ca)) as listener:
        await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, issued))
    [stored] = office.messages
    assert stored.tls is not None
    assert stored.tls.peer_subject == "O=Contoso,CN=mail.contoso.com"
    assert stored.tls.peer_sans == ("DNS:mail.contoso.com", "DNS:*.contoso.com")
    assert certificate_names(stored.tls.peer_subject, stored.tls.peer_sans) == (
        "mail.contoso.com",
        "*.contoso.com",
    )


async def test_a_subject_value_cannot_pass_for_another_common_name(
    office: MemoryPostOffice, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    # No SANs: the CN names the certificate. An organization name that reads like a CN comes first
    # in the subject and must stay part of the organization.
    issued = ca.issue("cn-only", (), common_name="relay.fabrikam.com", organization="x,CN=mail.contoso.com")
    async with serving(office, ssl_context=asking_context(certificate_files, ca)) as listener:
        await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, issued))
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.peer_sans == ()
    assert stored.tls.peer_subject == "O=x\\,CN\\=mail.contoso.com,CN=relay.fabrikam.com"
    assert certificate_names(stored.tls.peer_subject, stored.tls.peer_sans) == ("relay.fabrikam.com",)


async def test_a_client_without_a_certificate_is_served_as_before(
    office: MemoryPostOffice, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    async with serving(office, ssl_context=asking_context(certificate_files, ca)) as listener:
        await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, None))
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.version.startswith("TLS")
    assert (stored.tls.peer_subject, stored.tls.peer_sans) == (None, ())


async def test_a_certificate_that_does_not_verify_fails_the_handshake(
    office: MemoryPostOffice, certificate_files: CertificateFiles, ca: TestCa, tmp_path: Path
) -> None:
    """The trade-off of asking (docs/smtp.md): OpenSSL refuses the handshake; nothing is received
    over that connection, and the client must retry without its certificate or without TLS."""
    stranger = untrusted(tmp_path, "stranger", ("mail.contoso.com",))
    async with serving(office, ssl_context=asking_context(certificate_files, ca)) as listener:
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, stranger))
    assert office.messages == []
    [session] = office.sessions
    assert "tls_started" not in session.calls and "mail" not in session.calls
