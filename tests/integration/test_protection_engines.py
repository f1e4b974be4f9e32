"""The production engines end to end, and what happens when they fail.

A node on loopback with `malware_engine = "clamd"` and `spam_engine = "rspamd"` (a private clamd on a
test signature database and a private Rspamd, both Debian's), mail over SMTP: GTUBE goes to Junk and
EICAR to quarantine with the real engines; a released message reaches the Inbox stamped `SFV:SKQ`;
with clamd or Rspamd stopped the message is deferred (`451 4.7.0`), never delivered unscanned and
never lost: it arrives once the engine is back and the client retries. A node whose policy is to
deliver unscanned says so in a header. Submitted spam is refused and, past the day's limit, the
sender is restricted.
"""

from __future__ import annotations

import asyncio
import datetime
import imaplib
import json
import os
import signal
import smtplib
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from postroom.app import App
from postroom.config import Settings
from postroom.model.scope import OPERATOR
from tests.conftest import populate, wait_for
from tests.support.clamd import EICAR, Clamd, free_port
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, running
from tests.support.records import exported, stored_messages
from tests.support.rspamd import RspamdLab

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
BODY = "Hello Alice,\n\nThe minutes of Tuesday's meeting are below. Talk soon.\n\nNews team\n"
SENDER_ZONE = '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'


@dataclass
class Stack:
    dns: DnsTestServer
    clamd: Clamd
    rspamd: RspamdLab
    app: App
    node: RunningNode


def production(settings: Settings, clamd: Clamd, rspamd: RspamdLab) -> Settings:
    protection = replace(
        settings.protection,
        malware_engine="clamd",
        clamd_socket=str(clamd.socket_path),
        spam_engine="rspamd",
        rspamd_url=rspamd.url,
        rspamd_controller_url=rspamd.controller_url,
        rspamd_password=rspamd.password,
        engine_timeout=2.0,
    )
    return replace(settings, protection=protection)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with DnsTestServer() as dns:
        dns.set_zone("sender.test", SENDER_ZONE)
        clamd = Clamd().start()
        rspamd = RspamdLab(dns.address).start()
        try:
            settings = make_node(
                tmp_path_factory.mktemp("node"), nameservers=(str(dns.address),), protection=True
            )
            settings = production(settings, clamd, rspamd)
            app = App.open(settings)
            populate(app)
            with running(settings) as node:
                yield Stack(dns, clamd, rspamd, app, node)
            app.close()
        finally:
            rspamd.stop()
            clamd.stop()


def wire(
    *, subject: str, body: str = BODY, attachment: bytes | None = None, sender: str = "news@sender.test"
) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = "alice@contoso.com"
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    mail["Message-ID"] = make_msgid(domain="sender.test")
    mail.set_content(body)
    if attachment is not None:
        mail.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="report.pdf")
    return mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))


def send(node: RunningNode, raw: bytes) -> tuple[int, bytes]:
    """Send over SMTP; the reply to the end of DATA."""
    with smtplib.SMTP(*node.mx) as client:
        client.ehlo("mail.sender.test")
        client.mail("news@sender.test")
        client.rcpt("alice@contoso.com")
        return client.data(raw)


def landed(app: App, subject: str, folder: str = "Inbox") -> bytes | None:
    for stored in stored_messages(app.directory, app.mailstore, "alice@contoso.com", folder):
        if stored.subject == subject:
            return exported(app.directory, app.mailstore, "alice@contoso.com", stored.uid, folder)
    return None


def test_gtube_goes_to_junk_with_rspamd(stack: Stack) -> None:
    code, _ = send(stack.node, wire(subject="rspamd gtube", body=f"{GTUBE}\n"))
    assert code == 250
    wait_for(lambda: landed(stack.app, "rspamd gtube", "Junk") is not None)
    head = (landed(stack.app, "rspamd gtube", "Junk") or b"").partition(b"\r\n\r\n")[0]
    assert b"SCL:9;" in head and b"CAT:HSPM;" in head


def test_eicar_is_quarantined_by_clamd_and_an_admin_releases_it(stack: Stack) -> None:
    code, _ = send(stack.node, wire(subject="clamd eicar", attachment=EICAR))
    assert code == 250
    wait_for(lambda: any(m.subject == "clamd eicar" for m in stack.app.quarantine.list_messages(OPERATOR)))
    [held] = [m for m in stack.app.quarantine.list_messages(OPERATOR) if m.subject == "clamd eicar"]
    assert held.reason == "malware" and held.admin_only
    assert "Eicar" in str(held.detail)
    assert landed(stack.app, "clamd eicar") is None
    asyncio.run(stack.app.quarantine.release(OPERATOR, held.id))
    released = landed(stack.app, "clamd eicar")
    assert released is not None
    head = released.partition(b"\r\n\r\n")[0]
    assert b"SFV:SKQ;" in head and b"X-Postroom-Quarantine-Released: by " in head


def test_a_message_moved_into_junk_over_imap_is_learned_by_rspamd(stack: Stack) -> None:
    """The junk report of an IMAP MOVE reaches Rspamd's /learnspam (its learned count goes up) and
    is traced on the message."""
    code, _ = send(stack.node, wire(subject="junk by hand", body="Cheap watches, best prices.\n"))
    assert code == 250
    wait_for(lambda: landed(stack.app, "junk by hand") is not None)
    before = _learned(stack.rspamd)
    untrusted = ssl.create_default_context()
    untrusted.check_hostname = False
    untrusted.verify_mode = ssl.CERT_NONE
    host, port = stack.node.address("imaps")
    with imaplib.IMAP4_SSL(host, port, ssl_context=untrusted, timeout=15) as imap:
        imap.login("alice@contoso.com", "alice-pw")
        imap.select("INBOX")
        _, found = imap.uid("SEARCH", "SUBJECT", '"junk by hand"')
        (uid,) = found[0].split()
        assert imap.uid("MOVE", uid.decode(), "Junk")[0] == "OK"
    wait_for(lambda: _learned(stack.rspamd) > before, timeout=15)
    (stored,) = [
        message
        for message in stored_messages(stack.app.directory, stack.app.mailstore, "alice@contoso.com", "Junk")
        if message.subject == "junk by hand"
    ]

    def reports() -> list[dict[str, object]]:
        detail = stack.app.trace.detail(stored.trace_id, OPERATOR)
        return [] if detail is None else [e.detail for e in detail.events if e.event == "JunkReport"]

    wait_for(lambda: len(reports()) == 1)
    assert reports()[0]["result"] == "learned as spam"


def _learned(rspamd: RspamdLab) -> int:
    """Messages Rspamd's statistics have learned (its controller's /stat)."""
    request = urllib.request.Request(f"{rspamd.controller_url}/stat", headers={"Password": rspamd.password})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return int(json.loads(answer.read())["learned"])


def test_a_clean_message_is_delivered_with_both_engines(stack: Stack) -> None:
    code, _ = send(stack.node, wire(subject="ordinary minutes"))
    assert code == 250
    wait_for(lambda: landed(stack.app, "ordinary minutes") is not None)


@pytest.mark.parametrize("engine", ["clamd", "rspamd"])
def test_an_engine_that_stops_answering_defers_and_nothing_is_lost(stack: Stack, engine: str) -> None:
    """The engine's processes stopped (SIGSTOP) mid-test: the scan times out, the client is told to
    retry (451 4.7.0), nothing is delivered unscanned; resumed, the retry is delivered."""
    subject = f"while {engine} was stopped"
    group = os.getpgid(_pid(stack, engine))
    os.killpg(group, signal.SIGSTOP) if engine == "rspamd" else os.kill(_pid(stack, engine), signal.SIGSTOP)
    try:
        code, text = send(stack.node, wire(subject=subject))
        assert (code, text.split()[0]) == (451, b"4.7.0")
        assert landed(stack.app, subject) is None and landed(stack.app, subject, "Junk") is None
    finally:
        os.killpg(group, signal.SIGCONT) if engine == "rspamd" else os.kill(
            _pid(stack, engine), signal.SIGCONT
        )
    code, _ = send(stack.node, wire(subject=subject))  # the client's retry
    assert code == 250
    wait_for(lambda: landed(stack.app, subject) is not None)


def _pid(stack: Stack, engine: str) -> int:
    process = stack.clamd.process if engine == "clamd" else stack.rspamd._rspamd
    assert process is not None
    return process.pid


@pytest.mark.parametrize("policy", ["defer", "deliver"])
def test_engines_that_are_down(tmp_path: Path, policy: str) -> None:
    """clamd's socket and Rspamd's port with nobody there: deferred, or by policy delivered with a
    header that says the message was not scanned."""
    with DnsTestServer() as dns:
        dns.set_zone("sender.test", SENDER_ZONE)
        settings = make_node(tmp_path / "node", nameservers=(str(dns.address),), protection=True)
        protection = replace(
            settings.protection,
            malware_engine="clamd",
            clamd_socket=str(tmp_path / "no-clamd.sock"),
            spam_engine="rspamd",
            rspamd_url=f"http://127.0.0.1:{free_port()}",
            engine_unavailable=policy,
        )
        settings = replace(settings, protection=protection)
        app = App.open(settings)
        populate(app)
        with running(settings) as node:
            code, text = send(node, wire(subject="engines down"))
            if policy == "defer":
                assert (code, text.split()[0]) == (451, b"4.7.0")
            else:
                assert code == 250
                wait_for(lambda: landed(app, "engines down") is not None)
                head = (landed(app, "engines down") or b"").partition(b"\r\n\r\n")[0]
                assert b"X-Postroom-Malware-Scan: not scanned; clamd, rspamd unavailable" in head
                assert b"SFV:UNS;" in head
        app.close()


def test_submitted_spam_is_refused_and_its_sender_restricted(stack: Stack) -> None:
    submission = stack.node.address("submission")
    raw = wire(subject="buy now", body=f"{GTUBE}\n", sender="alice@contoso.com")
    replies: list[tuple[int, bytes]] = []
    for _ in range(4):
        with smtplib.SMTP(*submission) as client:
            client.starttls()
            client.login("alice@contoso.com", "alice-pw")
            try:
                client.sendmail("alice@contoso.com", ["someone@elsewhere.example"], raw)
                replies.append((250, b""))
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
                text = error.smtp_error if isinstance(error.smtp_error, bytes) else error.smtp_error.encode()
                replies.append((error.smtp_code, text.split()[0]))
    assert replies[:3] == [(550, b"5.7.708")] * 3
    assert replies[3] == (550, b"5.2.2")  # restricted until the next UTC day
    [restricted] = stack.app.directory.restricted_senders(OPERATOR)
    assert restricted.address == "alice@contoso.com" and restricted.reason == "sent spam"
