"""SMTP AUTH on real listeners over loopback, driven by smtplib: STARTTLS (the 587 role), implicit TLS
(the 465 role) and the MX endpoint that offers no AUTH, against the twin's one account."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config.settings import ListenAddress, SmtpLimits
from postroom.smtp import AuthPolicy, MemoryBudget, SmtpListener

from .conftest import CertificateFiles
from .harness import RawClient, ServingThread, serving
from .twin import PASSWORD, USER, MemoryPostOffice

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: from a device\r\nFrom: alice@postroom.test\r\n\r\nScanned page attached.\r\n"
RECIPIENT = "bob@fabrikam.example"


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


@pytest.fixture(scope="module")
def shared_office() -> MemoryPostOffice:
    return MemoryPostOffice()


@pytest.fixture(autouse=True)
def clean_office(shared_office: MemoryPostOffice) -> MemoryPostOffice:
    shared_office.messages.clear()
    shared_office.sessions.clear()
    shared_office.logins.clear()
    return shared_office


@pytest.fixture(scope="module")
def tls_pair(certificate_files: CertificateFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for the module's listeners, from the room's test certificate."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate_files.certificate, certificate_files.key)
    client = ssl.create_default_context(cafile=str(certificate_files.certificate))
    client.check_hostname = False
    return server, client


@pytest.fixture(scope="module")
def starttls_listener(
    shared_office: MemoryPostOffice, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[SmtpListener]:
    with ServingThread(shared_office, ssl_context=tls_pair[0], auth=AuthPolicy()) as listener:
        yield listener


@pytest.fixture(scope="module")
def implicit_listener(
    shared_office: MemoryPostOffice, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[SmtpListener]:
    with ServingThread(
        shared_office, ssl_context=tls_pair[0], implicit_tls=True, auth=AuthPolicy()
    ) as listener:
        yield listener


@pytest.fixture(scope="module")
def mx_listener(
    shared_office: MemoryPostOffice, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[SmtpListener]:
    with ServingThread(shared_office, ssl_context=tls_pair[0]) as listener:
        yield listener


@pytest.fixture
def client_tls(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> ssl.SSLContext:
    return tls_pair[1]


def submission(listener: SmtpListener, client_tls: ssl.SSLContext) -> smtplib.SMTP:
    """An smtplib client on the STARTTLS listener, after STARTTLS and the second EHLO."""
    client = smtplib.SMTP("127.0.0.1", listener.bound[0].port, timeout=5)
    client.ehlo("scanner.example")
    client.starttls(context=client_tls)
    client.ehlo("scanner.example")
    return client


def test_auth_is_offered_only_after_starttls_and_refused_before(
    starttls_listener: SmtpListener, client_tls: ssl.SSLContext
) -> None:
    with smtplib.SMTP("127.0.0.1", starttls_listener.bound[0].port, timeout=5) as client:
        client.ehlo("scanner.example")
        assert not client.has_extn("auth") and client.has_extn("starttls")
        code, text = client.docmd("AUTH", f"PLAIN {plain(USER, PASSWORD)}")
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login(USER, PASSWORD)  # smtplib itself sees no AUTH keyword
        client.starttls(context=client_tls)
        client.ehlo("scanner.example")
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert shared_logins(starttls_listener) == []


def shared_logins(listener: SmtpListener) -> list[tuple[str, str, str]]:
    office = listener.factory
    assert isinstance(office, MemoryPostOffice)
    return office.logins


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response", [True, False])
def test_login_after_starttls_then_send(
    starttls_listener: SmtpListener, client_tls: ssl.SSLContext, mechanism: str, initial_response: bool
) -> None:
    office = starttls_listener.factory
    assert isinstance(office, MemoryPostOffice)
    with submission(starttls_listener, client_tls) as client:
        client.user, client.password = USER, PASSWORD
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, text = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        assert client.sendmail(USER, [RECIPIENT], MESSAGE) == {}
    assert office.logins == [(mechanism, "", USER)]
    [stored] = office.messages
    assert stored.content == MESSAGE and stored.tls is not None
    assert office.sessions[0].calls[:7] == ["connect", "ehlo", "reset", "tls_started", "ehlo", "auth", "mail"]


def test_smtplib_login_picks_a_mechanism(starttls_listener: SmtpListener, client_tls: ssl.SSLContext) -> None:
    with submission(starttls_listener, client_tls) as client:
        assert client.login(USER, PASSWORD) == (235, b"2.7.0 Authentication successful")
    assert shared_logins(starttls_listener) == [("PLAIN", "", USER)]


def test_mail_before_auth_is_refused(starttls_listener: SmtpListener, client_tls: ssl.SSLContext) -> None:
    with submission(starttls_listener, client_tls) as client:
        assert client.mail(USER) == (530, b"5.7.57 Client not authenticated to send mail")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(USER, [RECIPIENT], MESSAGE)
        assert refused.value.smtp_code == 530
    assert shared_logins(starttls_listener) == []


def test_wrong_password_until_the_connection_is_closed(
    starttls_listener: SmtpListener, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.smtp")
    with submission(starttls_listener, client_tls) as client:
        client.user, client.password = USER, "wrong password"
        for _ in range(2):
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.auth("PLAIN", client.auth_plain)
            assert failed.value.smtp_code == 535 and "5.7.8 Authentication unsuccessful" in str(failed.value)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("LOGIN", client.auth_login)
        assert client.noop() == (421, b"4.7.0 Too many failed logins, closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert shared_logins(starttls_listener) == []
    assert caplog.text.count("failed AUTH from 127.0.0.1") == 3
    assert "wrong password" not in caplog.text


def test_a_421_from_the_session_closes(starttls_listener: SmtpListener, client_tls: ssl.SSLContext) -> None:
    with submission(starttls_listener, client_tls) as client:
        code, _ = client.docmd("AUTH", f"PLAIN {plain('closing@postroom.test', 'x')}")
        assert code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_implicit_tls_offers_auth_at_once(
    implicit_listener: SmtpListener, client_tls: ssl.SSLContext
) -> None:
    office = implicit_listener.factory
    assert isinstance(office, MemoryPostOffice)
    with smtplib.SMTP_SSL(
        "127.0.0.1", implicit_listener.bound[0].port, context=client_tls, timeout=5
    ) as client:
        client.ehlo("scanner.example")
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"] and not client.has_extn("starttls")
        assert client.mail(USER)[0] == 530
        client.user, client.password = USER, PASSWORD
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        assert client.sendmail(USER, [RECIPIENT], MESSAGE) == {}
    assert office.logins == [("LOGIN", "", USER)]
    assert office.messages[0].tls is not None


def test_the_mx_listener_offers_no_auth(mx_listener: SmtpListener, client_tls: ssl.SSLContext) -> None:
    with smtplib.SMTP("127.0.0.1", mx_listener.bound[0].port, timeout=5) as client:
        client.ehlo("relay.example")
        client.starttls(context=client_tls)
        client.ehlo("relay.example")
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", f"PLAIN {plain(USER, PASSWORD)}") == (
            502,
            b"5.5.1 Command not implemented",
        )
        assert client.sendmail("someone@fabrikam.example", ["bob@postroom.test"], MESSAGE) == {}
    assert shared_logins(mx_listener) == []


async def test_the_command_timeout_applies_while_waiting_for_a_sasl_response(
    office: MemoryPostOffice,
) -> None:
    limits = SmtpLimits(command_timeout=0.3)
    async with serving(office, limits, auth=AuthPolicy(tls_required=False)) as listener:
        client = await RawClient.connect(listener)
        try:
            assert await client.reply() == (220, None)
            await client.send(b"EHLO scanner.example\r\nAUTH LOGIN\r\n")
            assert await client.replies(2) == [(250, None), (334, None)]
            started = asyncio.get_running_loop().time()
            assert await client.reply() == (421, "4.4.2")
            assert asyncio.get_running_loop().time() - started >= 0.25
            assert await client.at_eof()
        finally:
            await client.close()
    assert office.sessions[0].calls == ["connect", "ehlo", "close"]


def test_an_auth_policy_needing_tls_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AUTH after TLS needs an SSL context"):
        SmtpListener(
            "submission",
            (ListenAddress("127.0.0.1", 0),),
            SmtpLimits(),
            "smtp.postroom.test",
            MemoryPostOffice(),
            spool_dir=tmp_path,
            memory=MemoryBudget(1 << 20),
            auth=AuthPolicy(),
        )
    with pytest.raises(ValueError, match="use one or more of PLAIN, LOGIN"):
        AuthPolicy(mechanisms=("CRAM-MD5",))


async def test_a_megabyte_sasl_line_over_a_socket_is_refused_and_the_session_goes_on(
    office: MemoryPostOffice,
) -> None:
    async with serving(office, auth=AuthPolicy(tls_required=False)) as listener:
        client = await RawClient.connect(listener)
        try:
            assert await client.reply() == (220, None)
            await client.send(b"EHLO scanner.example\r\nAUTH PLAIN\r\n")
            assert await client.replies(2) == [(250, None), (334, None)]
            await client.send(b"QUFB" * 262_144 + b"\r\nNOOP\r\n")
            assert await client.replies(2) == [(500, "5.5.6"), (250, "2.0.0")]
            await client.send(f"AUTH PLAIN {plain(USER, PASSWORD)}\r\n".encode())
            assert await client.reply() == (235, "2.7.0")
        finally:
            await client.close()
    assert office.logins == [("PLAIN", "", USER)]
