"""Client certificates on a STARTTLS listener that asks for one (the MX role, inbound connectors by
certificate): what the session is told of a verified certificate, of none, and what becomes of a
certificate that does not verify (that handshake fails; the client is not asked again, so its retry
gets through). Real TLS on loopback, smtplib as the client, a test CA."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

import pytest

from postroom.model.connectors import certificate_names
from postroom.smtp import ClientCertificates
from tests.support.pki import Issued, TestCa, untrusted

from .conftest import CertificateFiles
from .harness import serving
from .twin import MemoryPostOffice

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: hello\r\nFrom: app@contoso.com\r\n\r\nHi.\r\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("pki"))


def asking(
    certificate_files: CertificateFiles, ca: TestCa, clock: list[float] | None = None
) -> ClientCertificates:
    """The request as `app.startup.mx_tls_context` builds its context with a `client_ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_files.certificate, certificate_files.key)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(ca.certificate))
    now = clock if clock is not None else [0.0]
    return ClientCertificates(context, retry_seconds=3600, clock=lambda: now[0])


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
    office: MemoryPostOffice, server_tls: ssl.SSLContext, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    issued = ca.issue("onprem", ("mail.contoso.com", "*.contoso.com"), organization="Contoso")
    async with serving(
        office, ssl_context=server_tls, client_certificates=asking(certificate_files, ca)
    ) as listener:
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
    office: MemoryPostOffice, server_tls: ssl.SSLContext, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    # No SANs: the CN names the certificate. An organization name that reads like a CN comes first
    # in the subject and must stay part of the organization.
    issued = ca.issue("cn-only", (), common_name="relay.fabrikam.com", organization="x,CN=mail.contoso.com")
    async with serving(
        office, ssl_context=server_tls, client_certificates=asking(certificate_files, ca)
    ) as listener:
        await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, issued))
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.peer_sans == ()
    assert stored.tls.peer_subject == "O=x\\,CN\\=mail.contoso.com,CN=relay.fabrikam.com"
    assert certificate_names(stored.tls.peer_subject, stored.tls.peer_sans) == ("relay.fabrikam.com",)


async def test_a_client_without_a_certificate_is_served_as_before(
    office: MemoryPostOffice, server_tls: ssl.SSLContext, certificate_files: CertificateFiles, ca: TestCa
) -> None:
    async with serving(
        office, ssl_context=server_tls, client_certificates=asking(certificate_files, ca)
    ) as listener:
        await asyncio.to_thread(send, listener.bound[0].port, client_context(certificate_files, None))
    [stored] = office.messages
    assert stored.tls is not None and stored.tls.version.startswith("TLS")
    assert (stored.tls.peer_subject, stored.tls.peer_sans) == (None, ())


async def test_a_certificate_that_does_not_verify_fails_the_handshake_once(
    office: MemoryPostOffice,
    server_tls: ssl.SSLContext,
    certificate_files: CertificateFiles,
    ca: TestCa,
    tmp_path: Path,
) -> None:
    """The trade-off of asking (docs/smtp.md): OpenSSL refuses the handshake and nothing is received
    over that connection; the client is not asked again for `retry_seconds`, so its retry (with the
    same certificate) gets through, as if nobody had asked; after that it is asked again."""
    stranger = untrusted(tmp_path, "stranger", ("mail.contoso.com",))
    clock = [0.0]
    request = asking(certificate_files, ca, clock)
    client = client_context(certificate_files, stranger)
    async with serving(office, ssl_context=server_tls, client_certificates=request) as listener:
        port = listener.bound[0].port
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await asyncio.to_thread(send, port, client)
        assert office.messages == []
        assert "tls_started" not in office.sessions[0].calls and "mail" not in office.sessions[0].calls
        assert not request.asks("127.0.0.1") and request.asks("127.0.0.2")
        await asyncio.to_thread(send, port, client)  # the retry
        [stored] = office.messages
        assert stored.tls is not None and (stored.tls.peer_subject, stored.tls.peer_sans) == (None, ())
        clock[0] = 3601.0
        assert request.asks("127.0.0.1")
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await asyncio.to_thread(send, port, client)


def test_the_clients_not_asked_are_bounded(certificate_files: CertificateFiles, ca: TestCa) -> None:
    request = asking(certificate_files, ca)
    request.max_clients = 3
    for n in range(5):
        request.failed(f"192.0.2.{n}", ssl.SSLError("bad certificate"))
    assert [request.asks(f"192.0.2.{n}") for n in range(5)] == [True, True, False, False, False]
    with pytest.raises(ValueError, match="CERT_OPTIONAL"):
        ClientCertificates(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
