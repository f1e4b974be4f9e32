"""The submission endpoint over real sockets: smtplib against a running node (STARTTLS and implicit TLS).

One node serves the module; each test sends as its own mailbox, so the per-mailbox rate and daily
counters of one test never touch another's, and the login throttling tests use their own client
addresses (127.0.0.3 and up)."""

from __future__ import annotations

import base64
import dataclasses
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from sqlalchemy import select

from postroom.app import App
from postroom.directory import Switch
from postroom.model.scope import OPERATOR
from postroom.storage.schema import queue_recipients, trace_events
from tests.cli.test_commands import postroom
from tests.conftest import populate, wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, running

PASSWORD = "device-password-1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    # A DNS server with no zones: every lookup of a remote domain is refused, so remote recipients are
    # deferred and stay in the queue for the assertions (never subject to the machine's resolver).
    no_zones = DnsTestServer().start()
    settings = make_node(tmp_path_factory.mktemp("submission") / "node", nameservers=(str(no_zones.address),))
    settings = dataclasses.replace(
        settings,
        submission=dataclasses.replace(
            settings.submission,
            messages_per_minute=3,
            recipients_per_day=6,
            auth_failures_before_throttle=3,
            auth_failures_before_disconnect=5,
        ),
    )
    app = App.open(settings)
    populate(app)
    app.close()
    with running(settings) as running_node:
        yield running_node
    no_zones.stop()


def mailbox(node: RunningNode, address: str, **sending: object) -> str:
    """A mailbox of contoso with the test password (and sending settings); returns its address."""
    directory = node.app.directory
    directory.add_mailbox(OPERATOR, address, password=PASSWORD)
    if sending:
        directory.set_mailbox_sending(OPERATOR, address, **sending)  # type: ignore[arg-type]
    return address


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(node: RunningNode, *, source: str = "127.0.0.1", tls: bool = True) -> smtplib.SMTP:
    host, port = node.address("submission")
    smtp = smtplib.SMTP(host, port, timeout=15, source_address=(source, 0))
    smtp.ehlo("device.test")
    if tls:
        smtp.starttls(context=client_context())
        smtp.ehlo("device.test")
    return smtp


def auth(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, str]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, text = smtp.docmd("AUTH", f"PLAIN {token}")
    return code, text.decode()


def login(node: RunningNode, user: str, *, source: str = "127.0.0.1") -> smtplib.SMTP:
    smtp = connect(node, source=source)
    code, text = auth(smtp, user, PASSWORD)
    assert code == 235, text
    return smtp


def message(sender: str, to: list[str], *, body: str = "hello", subject: str = "test") -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = subject
    mail.set_content(body)
    return mail.as_bytes(policy=SMTP)


def send(smtp: smtplib.SMTP, sender: str, to: list[str], data: bytes | None = None) -> tuple[int, str]:
    """MAIL, RCPTs and DATA by hand: the first reply that is not positive, else DATA's."""
    code, text = smtp.mail(sender)
    if code >= 400:
        return code, text.decode()
    for recipient in to:
        code, text = smtp.rcpt(recipient)
        if code >= 400:
            smtp.rset()
            return code, text.decode()
    code, text = smtp.data(data if data is not None else message(sender, to))
    return code, text.decode()


def folder(node: RunningNode, address: str, name: str) -> list[str]:
    app = node.app
    owner = app.directory.get_recipient(OPERATOR, address)
    return [m.subject for m in app.mailstore.list_messages(OPERATOR, owner.id, name)]


def test_auth_needs_starttls_and_mail_needs_auth(node: RunningNode) -> None:
    smtp = connect(node, tls=False)
    assert auth(smtp, "alice@contoso.com", "alice-pw")[0] == 530
    code, text = smtp.docmd("AUTH", "PLAIN")
    assert (code, text.decode().split()[0]) == (530, "5.7.0")
    smtp.starttls(context=client_context())
    smtp.ehlo("device.test")
    code, text = smtp.mail("alice@contoso.com")
    assert (code, text.decode().split()[0]) == (530, "5.7.57")
    smtp.quit()


def test_submission_over_starttls_delivers_inside_queues_outside_and_keeps_a_sent_copy(
    node: RunningNode,
) -> None:
    sender = mailbox(node, "sender1@contoso.com")
    smtp = login(node, sender)
    data = message(sender, ["bob@contoso.com", "someone@example.net"], subject="quarterly report")
    code, text = send(smtp, sender, ["bob@contoso.com", "someone@example.net"], data)
    smtp.quit()
    assert code == 250, text
    message_id = text.split()[-1]
    assert "quarterly report" in folder(node, "bob@contoso.com", "Inbox")
    assert folder(node, sender, "Sent") == ["quarterly report"]
    with node.app.database.read() as conn:
        rows = conn.execute(
            select(queue_recipients.c.recipient, queue_recipients.c.route).where(
                queue_recipients.c.message_id == message_id
            )
        ).all()
        events = conn.execute(
            select(trace_events.c.event, trace_events.c.detail).where(trace_events.c.message_id == message_id)
        ).all()
    assert [tuple(row) for row in rows] == [("someone@example.net", "remote")]
    submit = [detail for event, detail in events if event == "Submit"]
    assert (
        submit and '"account": "sender1@contoso.com"' in submit[0] and '"client_ip": "127.0.0.1"' in submit[0]
    )
    owner = node.app.directory.get_recipient(OPERATOR, "bob@contoso.com")
    raw = node.app.mailstore.export(OPERATOR, owner.id, 1, "Inbox")
    assert b"with ESMTPSA id" in raw


def test_implicit_tls_listener_takes_auth(node: RunningNode) -> None:
    sender = mailbox(node, "sender2@contoso.com")
    host, port = node.address("submissions")
    smtp = smtplib.SMTP_SSL(host, port, timeout=15, context=client_context())
    smtp.ehlo("device.test")
    assert auth(smtp, sender, PASSWORD)[0] == 235
    assert send(smtp, sender, ["bob@contoso.com"])[0] == 250
    smtp.quit()


def test_unauthenticated_clients_never_relay(node: RunningNode) -> None:
    smtp = connect(node)
    code, text = smtp.mail("alice@contoso.com")
    assert (code, text.decode().split()[0]) == (530, "5.7.57")
    assert smtp.rcpt("victim@example.net")[0] >= 500
    smtp.quit()
    mx = smtplib.SMTP(*node.mx, timeout=15)
    mx.ehlo("attacker.test")
    assert mx.mail("alice@contoso.com")[0] == 250
    code, text = mx.rcpt("victim@example.net")
    assert (code, text.decode().split()[0]) == (550, "5.7.1")
    mx.quit()


def test_wrong_password_is_refused_then_throttled_then_disconnected(node: RunningNode) -> None:
    target = mailbox(node, "throttled@contoso.com")
    replies = []
    for _ in range(3):  # one connection per attempt: the SMTP core also ends a session after 3 failures
        smtp = connect(node, source="127.0.0.3")
        replies.append(auth(smtp, target, "wrong-password")[0])
        smtp.close()
    smtp = connect(node, source="127.0.0.3")
    code, text = auth(smtp, target, PASSWORD)  # the right password, while throttled
    smtp.close()
    assert replies == [535, 535, 535]
    assert (code, text.split()[0]) == (454, "4.7.0")
    # From another address the account is still throttled; from this one every account is.
    smtp = connect(node, source="127.0.0.4")
    assert auth(smtp, target, PASSWORD)[0] == 454
    smtp.close()
    other = mailbox(node, "bystander@contoso.com")
    smtp = connect(node, source="127.0.0.3")
    assert auth(smtp, other, PASSWORD)[0] == 454  # the address is throttled, whatever the account
    smtp.close()
    smtp = connect(node, source="127.0.0.3")
    code, text = auth(smtp, other, PASSWORD)
    assert (code, text.split()[0]) == (421, "4.7.0")  # the address's fifth failure: disconnect
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.noop()
    elsewhere = connect(node, source="127.0.0.5")
    assert auth(elsewhere, other, PASSWORD)[0] == 235
    elsewhere.quit()


def test_failed_logins_are_logged_with_the_client_and_account(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = connect(node, source="127.0.0.6")
    with caplog.at_level("WARNING", logger="postroom.app.submission"):
        assert auth(smtp, "alice@contoso.com", "not-her-password")[0] == 535
        wait_for(lambda: any("SMTP AUTH failed" in r.getMessage() for r in caplog.records))
    smtp.close()
    line = next(r.getMessage() for r in caplog.records if "SMTP AUTH failed" in r.getMessage())
    assert "client=127.0.0.6" in line and "alice@contoso.com" in line and "not-her-password" not in line


def test_another_tenants_password_never_logs_in(node: RunningNode) -> None:
    node.app.directory.set_recipient(OPERATOR, "carol@fabrikam.com", password="carol-password")
    smtp = connect(node, source="127.0.0.7")
    assert auth(smtp, "alice@contoso.com", "carol-password")[0] == 535
    assert auth(smtp, "carol@fabrikam.com", "carol-password")[0] == 235
    smtp.quit()


def test_smtp_auth_off_per_tenant_and_per_mailbox(node: RunningNode) -> None:
    directory = node.app.directory
    user = mailbox(node, "nosmtp@contoso.com", smtp_auth=Switch.OFF)
    smtp = connect(node)
    code, text = auth(smtp, user, PASSWORD)
    assert (code, text.split()[0]) == (535, "5.7.139")
    smtp.close()
    directory.set_mailbox_sending(OPERATOR, user, smtp_auth=Switch.INHERIT)
    login(node, user).quit()
    directory.set_tenant_sending(OPERATOR, "contoso", smtp_auth=False)
    try:
        smtp = connect(node)
        assert auth(smtp, user, PASSWORD)[0] == 535
        smtp.close()
        directory.set_mailbox_sending(OPERATOR, user, smtp_auth=Switch.ON)  # the mailbox's own wins
        login(node, user).quit()
    finally:
        directory.set_tenant_sending(OPERATOR, "contoso", smtp_auth=True)


def test_send_as_is_refused_for_the_envelope_and_for_from_unless_granted(node: RunningNode) -> None:
    directory = node.app.directory
    sender = mailbox(node, "assistant@contoso.com")
    smtp = login(node, sender)
    for envelope in ("alice@contoso.com", ""):
        code, text = smtp.mail(envelope)
        assert (code, text.decode().split()[0]) == (550, "5.7.60")
    code, text = send(smtp, sender, ["bob@contoso.com"], message("alice@contoso.com", ["bob@contoso.com"]))
    assert (code, text.split()[0]) == (550, "5.7.60")
    directory.grant_send_as(OPERATOR, "alice@contoso.com", sender)
    directory.grant_send_as(OPERATOR, "team@contoso.com", sender)
    smtp.quit()
    smtp = login(node, sender)  # grants are read at login
    assert (
        send(smtp, "al@contoso.com", ["bob@contoso.com"], message("alice@contoso.com", ["x@example.net"]))[0]
        == 250
    )
    assert (
        send(smtp, "team@contoso.com", ["bob@contoso.com"], message("team@contoso.com", ["bob@contoso.com"]))[
            0
        ]
        == 250
    )
    smtp.quit()


def test_recipients_per_message(node: RunningNode) -> None:
    sender = mailbox(node, "fewrcpt@contoso.com", max_recipients=2)
    smtp = login(node, sender)
    assert smtp.mail(sender)[0] == 250
    assert smtp.rcpt("a@example.net")[0] == 250
    assert smtp.rcpt("b@example.net")[0] == 250
    code, text = smtp.rcpt("c@example.net")
    assert (code, text.decode().split()[0]) == (452, "4.5.3")
    smtp.quit()


def test_a_recipient_of_another_tenant_is_sent_out_not_delivered_inside_the_senders_message(
    node: RunningNode,
) -> None:
    sender = mailbox(node, "crosser@contoso.com")
    smtp = login(node, sender)
    data = message(sender, ["carol@fabrikam.com"], subject="across the boundary")
    code, text = send(smtp, sender, ["carol@fabrikam.com"], data)
    smtp.quit()
    assert code == 250, text
    assert "across the boundary" not in folder(node, "carol@fabrikam.com", "Inbox")
    with node.app.database.read() as conn:
        rows = conn.execute(
            select(
                queue_recipients.c.recipient, queue_recipients.c.route, queue_recipients.c.tenant_id
            ).where(queue_recipients.c.message_id == text.split()[-1])
        ).all()
    contoso = node.app.directory.get_tenant(OPERATOR, "contoso").id
    assert [tuple(row) for row in rows] == [("carol@fabrikam.com", "remote", contoso)]


def test_send_and_receive_size_limits(node: RunningNode) -> None:
    sender = mailbox(node, "small@contoso.com", max_send_size=2000)
    receiver = mailbox(node, "tiny@contoso.com", max_receive_size=1000)
    smtp = login(node, sender)
    code, text = smtp.mail(sender, ["SIZE=5000"])
    assert (code, text.decode().split()[0]) == (552, "5.2.3")
    big = message(sender, ["bob@contoso.com"], body="x" * 3000)
    code, text = send(smtp, sender, ["bob@contoso.com"], big)
    assert (code, text.split()[0]) == (552, "5.2.3")
    assert smtp.mail(sender, ["SIZE=1500"])[0] == 250
    code, text = smtp.rcpt(receiver)
    assert (code, text.decode().split()[0]) == (552, "5.2.3")
    assert smtp.rcpt("bob@contoso.com")[0] == 250
    smtp.rset()
    # Without SIZE= the receiver is accepted at RCPT, and fails at the end of DATA (queued for its DSN).
    medium = message(sender, [receiver], body="y" * 1200, subject="too big for tiny")
    code, text = send(smtp, sender, [receiver, "bob@contoso.com"], medium)
    smtp.quit()
    assert code == 250
    assert "too big for tiny" not in folder(node, receiver, "Inbox")
    assert "too big for tiny" in folder(node, "bob@contoso.com", "Inbox")
    # tiny's copy was queued already failed; the queue's DSN round tells the sender.
    wait_for(lambda: any("too big for tiny" in subject for subject in folder(node, sender, "Inbox")))
    [report] = [s for s in folder(node, sender, "Inbox") if "too big for tiny" in s]
    assert report.startswith("Undeliverable")
    with node.app.database.read() as conn:
        events = conn.execute(
            select(trace_events.c.event, trace_events.c.recipient).where(
                trace_events.c.message_id == text.split()[-1]
            )
        ).all()
    assert ("Fail", receiver) in events and ("DSN", receiver) in events


def test_message_rate_per_minute(node: RunningNode) -> None:
    sender = mailbox(node, "busy@contoso.com")
    smtp = login(node, sender)
    for _ in range(3):
        assert send(smtp, sender, ["bob@contoso.com"])[0] == 250
    code, text = send(smtp, sender, ["bob@contoso.com"])
    assert (code, text.split()[0]) == (450, "4.7.0")
    smtp.quit()
    assert len(folder(node, sender, "Sent")) == 3


def test_daily_recipient_limit_restricts_until_released(node: RunningNode) -> None:
    sender = mailbox(node, "bulk@contoso.com")
    smtp = login(node, sender)
    assert send(smtp, sender, ["bob@contoso.com", "a@example.net", "b@example.net"])[0] == 250
    code, text = send(smtp, sender, ["c@example.net", "d@example.net", "e@example.net", "f@example.net"])
    assert (code, text.split()[0]) == (550, "5.1.90")
    code, text = smtp.mail(sender)
    assert (code, text.decode().split()[0]) == (550, "5.2.2")
    smtp.quit()
    assert [r.address for r in node.app.directory.restricted_senders(OPERATOR)] == [sender]
    node.app.directory.release_sender(OPERATOR, sender)
    smtp = login(node, sender)
    assert send(smtp, sender, ["g@example.net"])[0] == 250
    smtp.quit()


def test_node_reports_both_submission_listeners(node: RunningNode) -> None:
    names = {item.name: item.protocol for item in node.listening}
    assert names["submission"] == "SMTP" and names["submissions"] == "SMTPS"


def test_a_change_made_by_another_process_applies_at_the_next_login_despite_the_login_cache(
    node: RunningNode,
) -> None:
    """A verified login is cached for `auth_cache_seconds` (60 s here); the CLI, another process, changes
    the password, switches SMTP AUTH off and removes the mailbox: each applies to the very next login."""
    target = mailbox(node, "cached-login@contoso.com")
    config = node.settings.source

    def login_reply(password: str) -> tuple[int, str]:
        smtp = connect(node, source="127.0.0.12")
        code, text = auth(smtp, target, password)
        smtp.close()
        return code, text.split()[0]

    assert login_reply(PASSWORD) == (235, "2.7.0")
    assert login_reply(PASSWORD) == (235, "2.7.0")  # from the cache now
    changed = postroom("mailbox", "set", target, "--password-stdin", config=config, stdin="new-password-2\n")
    assert changed.returncode == 0, changed.stderr
    assert login_reply(PASSWORD) == (535, "5.7.8")
    assert login_reply("new-password-2") == (235, "2.7.0")
    switched = postroom("mailbox", "set", target, "--smtp-auth", "off", config=config)
    assert switched.returncode == 0, switched.stderr
    assert login_reply("new-password-2") == (535, "5.7.139")
    removed = postroom("mailbox", "remove", target, "--yes", config=config)
    assert removed.returncode == 0, removed.stderr
    assert login_reply("new-password-2") == (535, "5.7.8")
