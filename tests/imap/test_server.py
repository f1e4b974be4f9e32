"""The IMAP server over real sockets: imaplib and imapclient against a running node.

One node serves the module, with a certificate from the test CA for "localhost" on both listeners
(the clients verify it). Each test logs in as its own mailbox, so one test's folders and messages
never meet another's; the login throttling tests connect from their own client addresses in
127.0.50.0/24 and use their own accounts."""

from __future__ import annotations

import dataclasses
import imaplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import select, update

from postroom.app import App, remove_tenant
from postroom.app import imap as imap_endpoint
from postroom.mailstore import mailbox as mailstore
from postroom.model.message import summarize
from postroom.model.scope import OPERATOR
from postroom.storage.schema import recipients, trace_events
from tests.conftest import populate, wait_for
from tests.support.node import RunningNode, make_node, running
from tests.support.pki import TestCa

PASSWORD = "imap-password-1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("imap-ca"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, ca: TestCa) -> Iterator[RunningNode]:
    settings = make_node(tmp_path_factory.mktemp("imap") / "node")
    issued = ca.issue("imap", ("localhost",))
    settings = dataclasses.replace(
        settings,
        tls=dataclasses.replace(settings.tls, certificate=issued.certificate, key=issued.key),
        imap=dataclasses.replace(
            settings.imap,
            auth_failures_before_throttle=3,
            auth_failures_before_disconnect=5,
            max_append_size=200_000,
            max_errors=5,
            poll_seconds=5.0,
            login_timeout=1.0,  # the bounds tests wait for these; no other test pauses before login
            idle_max=2.0,
            max_connections_per_ip=6,
        ),
    )
    app = App.open(settings)
    populate(app)
    app.close()
    with running(settings) as running_node:
        yield running_node


def mailbox(node: RunningNode, address: str, *, quota: int | None = None) -> str:
    node.app.directory.add_mailbox(OPERATOR, address, password=PASSWORD)
    if quota is not None:
        recipient = node.app.directory.get_recipient(OPERATOR, address)
        with node.app.database.write() as conn:
            conn.execute(update(recipients).where(recipients.c.id == recipient.id).values(quota_bytes=quota))
    return address


def context(ca: TestCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.certificate))


class SourcedIMAP4(imaplib.IMAP4):
    """imaplib's IMAP4 from a chosen client address (the throttling tests' own IP)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=15)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def imaps(node: RunningNode, ca: TestCa) -> imaplib.IMAP4_SSL:
    _, port = node.address("imaps")
    return imaplib.IMAP4_SSL("localhost", port, ssl_context=context(ca), timeout=15)


def client(node: RunningNode, ca: TestCa, address: str) -> IMAPClient:
    _, port = node.address("imaps")
    imap = IMAPClient("localhost", port, ssl=True, ssl_context=context(ca), timeout=15)
    imap.login(address, PASSWORD)
    return imap


def message(subject: str, *, body: str = "hello", sender: str = "someone@partner.example") -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = "x@contoso.com"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@partner.example>"
    mail.set_content(body)
    return mail.as_bytes(policy=SMTP)


def deliver(node: RunningNode, to: str, subject: str) -> None:
    with smtplib.SMTP(*node.mx, timeout=15) as smtp:
        smtp.sendmail("someone@partner.example", [to], message(subject))


def raw(node: RunningNode, ca: TestCa) -> ssl.SSLSocket:
    _, port = node.address("imaps")
    sock = socket.create_connection(("localhost", port), timeout=15)
    tls = context(ca).wrap_socket(sock, server_hostname="localhost")
    read_until(tls, b"\r\n")
    return tls


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# --- listeners and login ------------------------------------------------------------------------
def test_starttls_listener_refuses_login_before_tls_and_verifies_after(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "starttls@contoso.com")
    host, port = node.address("imap")
    imap = imaplib.IMAP4(host, port, timeout=15)
    assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        imap.login(address, PASSWORD)
    imap.shutdown()
    imap = imaplib.IMAP4("localhost", port, timeout=15)
    imap.starttls(context(ca))
    assert "AUTH=PLAIN" in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
    typ, _ = imap.login(address, PASSWORD)
    assert typ == "OK"
    imap.logout()


def test_implicit_tls_listener_with_the_test_ca_and_authenticate_plain(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "implicit@contoso.com")
    imap = imaps(node, ca)
    assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
    typ, _ = imap.authenticate("PLAIN", lambda _: f"\0{address}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert "UIDPLUS" in imap.capabilities or b"UIDPLUS" in imap.capability()[1][0]
    imap.logout()


def test_wrong_passwords_are_throttled_per_account_then_disconnected(node: RunningNode) -> None:
    address = mailbox(node, "throttled@contoso.com")
    host, port = node.address("imap")
    answers = []
    for number in range(6):
        imap = SourcedIMAP4(host, port, f"127.0.50.{10 + number}")  # a new client address each time
        imap.starttls(ssl._create_unverified_context())
        try:
            imap.login(address, "wrong" if number < 3 else PASSWORD)
        except imaplib.IMAP4.error as error:
            answers.append(str(error).split("]")[0].split("[")[-1])
        except imaplib.IMAP4.abort:
            answers.append("BYE")
        imap.shutdown()
    # three failures; then even the right password is refused (UNAVAILABLE), then the connection closes
    assert answers == ["AUTHENTICATIONFAILED"] * 3 + ["UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE"]


def test_wrong_passwords_are_throttled_per_client_address(node: RunningNode) -> None:
    host, port = node.address("imap")
    answers = []
    for number in range(6):
        imap = SourcedIMAP4(host, port, "127.0.50.99")
        imap.starttls(ssl._create_unverified_context())
        try:
            imap.login(f"guess{number}@contoso.com", "wrong")
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as error:
            answers.append(str(error))
        imap.shutdown()
    assert ["AUTHENTICATIONFAILED" in answer for answer in answers[:3]] == [True] * 3
    assert all("UNAVAILABLE" in answer for answer in answers[3:])


def test_a_removed_tenants_mailbox_cannot_log_in_and_its_names_reused_see_nothing_of_it(
    node: RunningNode, ca: TestCa
) -> None:
    directory = node.app.directory
    directory.add_tenant(OPERATOR, "northwind")
    directory.add_domain(OPERATOR, "northwind.example", "northwind", verified=True)
    old = mailbox(node, "dana@northwind.example")
    deliver(node, old, "for the old dana")
    with client(node, ca, old) as imap:
        imap.select_folder("INBOX")
        wait_for(lambda: len(imap.search("ALL")) == 1, timeout=10)
    app = node.app
    remove_tenant(app.database, app.blobs, directory, OPERATOR, "northwind", apply=True)
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        client(node, ca, old)
    directory.add_tenant(OPERATOR, "northwind")
    directory.add_domain(OPERATOR, "northwind.example", "northwind", verified=True)
    mailbox(node, "dana@northwind.example")
    with client(node, ca, "dana@northwind.example") as imap:
        assert imap.select_folder("INBOX")[b"EXISTS"] == 0


# --- folders ------------------------------------------------------------------------------------
def test_list_shows_special_use_and_folders_are_created_renamed_subscribed_deleted(
    node: RunningNode, ca: TestCa
) -> None:
    with client(node, ca, mailbox(node, "folders@contoso.com")) as imap:
        listed = {name: flags for flags, _, name in imap.list_folders()}
        assert "INBOX" in listed
        special = {flag for flags in listed.values() for flag in flags}
        assert {b"\\Sent", b"\\Drafts", b"\\Junk", b"\\Trash"} <= special
        assert imap.namespace().personal == (("", "/"),)
        imap.create_folder("Projects/2026")
        imap.create_folder("Entwürfe")
        names = [name for _, _, name in imap.list_folders()]
        assert {"Projects", "Projects/2026", "Entwürfe"} <= set(names)
        assert [name for _, _, name in imap.list_folders("Projects/", "%")] == ["Projects/2026"]
        with pytest.raises(imapclient_error(), match="ALREADYEXISTS"):
            imap.create_folder("Projects")
        imap.rename_folder("Projects", "Archive 2026")
        names = [name for _, _, name in imap.list_folders()]
        assert "Archive 2026/2026" in names and "Projects/2026" not in names
        imap.unsubscribe_folder("Entwürfe")
        assert "Entwürfe" not in [name for _, _, name in imap.list_sub_folders()]
        status = imap.folder_status(
            "INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]
        )
        assert status[b"MESSAGES"] == 0 and status[b"UIDVALIDITY"] > 0
        imap.delete_folder("Entwürfe")
        with pytest.raises(imapclient_error(), match="NONEXISTENT"):
            imap.select_folder("Entwürfe")
        with pytest.raises(imapclient_error()):
            imap.delete_folder("INBOX")


def imapclient_error() -> type[Exception]:
    from imapclient.exceptions import IMAPClientError

    return IMAPClientError


# --- messages -----------------------------------------------------------------------------------
def test_append_fetch_search_store_copy_move_expunge(node: RunningNode, ca: TestCa) -> None:
    with client(node, ca, mailbox(node, "messages@contoso.com")) as imap:
        when = time.time() - 86_400
        first = message("first one", body="apples")
        response = imap.append("INBOX", first, flags=[b"\\Flagged"])
        assert b"APPENDUID" in response
        imap.append("INBOX", message("second one", body="pears"))
        imap.append("INBOX", message("Grüße", body="plums"))
        selected = imap.select_folder("INBOX")
        assert selected[b"EXISTS"] == 3 and selected[b"UIDNEXT"] == 4
        assert selected[b"HIGHESTMODSEQ"] >= 1
        fetched = imap.fetch([1, 2, 3], ["FLAGS", "ENVELOPE", "RFC822.SIZE", "INTERNALDATE", "BODYSTRUCTURE"])
        assert [data[b"ENVELOPE"].subject for data in fetched.values()][:2] == [b"first one", b"second one"]
        assert b"\\Flagged" in fetched[1][b"FLAGS"]
        assert b"\\Seen" not in fetched[1][b"FLAGS"]
        full = imap.fetch([1], ["BODY.PEEK[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "BODY.PEEK[TEXT]<0.3>"])
        assert full[1][b"BODY[]"] == first
        assert full[1][b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: first one\r\n\r\n"
        assert full[1][b"BODY[TEXT]<0>"] == b"app"
        assert b"\\Seen" not in imap.get_flags([1])[1]  # PEEK
        imap.fetch([2], ["BODY[]"])
        assert b"\\Seen" in imap.get_flags([2])[2]  # not PEEK: read
        assert imap.search(["SUBJECT", "second"]) == [2]
        assert imap.search(["BODY", "plums"]) == [3]
        assert imap.search(["SUBJECT", "grüße"], charset="UTF-8") == [3]
        assert imap.search(["UNSEEN"]) == [1, 3]
        assert imap.search(["FLAGGED"]) == [1]
        assert imap.search(["SINCE", time.strftime("%d-%b-%Y", time.gmtime(when))]) == [1, 2, 3]
        imap.add_flags([3], [b"$Important"])
        assert b"$Important" in imap.get_flags([3])[3]
        imap.copy([1], "Archive")
        assert imap.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
        imap.move([2], "Drafts")
        assert imap.search("ALL") == [1, 3]  # UIDs (imapclient's default): the moved one is gone
        imap.set_flags([1], [b"\\Deleted"])
        imap.expunge()
        assert imap.search("ALL") == [3]
        imap.unselect_folder()
        examined = imap.select_folder("Drafts", readonly=True)
        assert examined[b"EXISTS"] == 1 and examined[b"READ-ONLY"] == [b""]
        with pytest.raises(imapclient_error(), match="read-only"):
            imap.add_flags([1], [b"\\Seen"])


def test_condstore_fetch_changedsince_and_store_unchangedsince(node: RunningNode, ca: TestCa) -> None:
    with client(node, ca, mailbox(node, "condstore@contoso.com")) as imap:
        imap.append("INBOX", message("a"))
        imap.append("INBOX", message("b"))
        imap.enable("CONDSTORE")
        selected = imap.select_folder("INBOX")
        highest = selected[b"HIGHESTMODSEQ"]
        imap.add_flags([2], [b"\\Seen"])
        changed = imap.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
        assert list(changed) == [2] and changed[2][b"MODSEQ"][0] > highest
    sock = raw(node, ca)
    sock.sendall(
        b"c1 LOGIN condstore@contoso.com " + PASSWORD.encode() + b"\r\nc2 SELECT INBOX (CONDSTORE)\r\n"
    )
    assert b"[HIGHESTMODSEQ " in read_until(sock, b"c2 OK [READ-WRITE] SELECT completed\r\n")
    sock.sendall(b"c3 UID STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)\r\n" % highest)
    answer = read_until(sock, b"\r\n")
    while not answer.split(b"\r\n")[-2].startswith(b"c3 "):
        answer += read_until(sock, b"\r\n")
    assert b"c3 OK [MODIFIED 2]" in answer  # message 2 changed after `highest`; message 1 did not
    assert b"UID 1 FLAGS (\\Flagged) MODSEQ" in answer


def test_append_over_the_limit_gets_toobig_and_over_quota_gets_overquota(
    node: RunningNode, ca: TestCa
) -> None:
    address = mailbox(node, "limits@contoso.com", quota=4096)
    imap = imaps(node, ca)
    imap.login(address, PASSWORD)
    assert b"QUOTA" in imap.capability()[1][0].split()
    typ, data = imap.append("INBOX", None, None, b"x" * 300_000)
    assert typ == "NO" and b"TOOBIG" in data[0]
    typ, data = imap.append("INBOX", None, None, message("small"))
    assert typ == "OK"
    typ, data = imap.append("INBOX", None, None, message("big", body="y" * 5000))
    assert typ == "NO" and b"OVERQUOTA" in data[0]
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK" and b"STORAGE" in data[1][0]
    imap.logout()


def test_pipelined_commands_and_non_synchronizing_literals(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "pipelined@contoso.com")
    sock = raw(node, ca)
    content = message("pipelined")
    login = f"p1 LOGIN {{{len(address)}+}}\r\n{address} {{{len(PASSWORD)}+}}\r\n{PASSWORD}\r\n".encode()
    append = b"p2 APPEND INBOX (\\Seen) {%d+}\r\n" % len(content) + content + b"\r\n"
    commands = b"p3 SELECT INBOX\r\np4 FETCH 1 (FLAGS UID)\r\np5 UID COPY 1 Archive\r\np6 LOGOUT\r\n"
    sock.sendall(login + append + commands)
    answer = read_until(sock, b"p6 OK LOGOUT completed\r\n")
    tags = [line.split()[0] for line in answer.split(b"\r\n") if line and not line.startswith(b"*")]
    assert tags == [b"p1", b"p2", b"p3", b"p4", b"p5", b"p6"]
    assert b"p2 OK [APPENDUID" in answer and b"* 1 FETCH (FLAGS (\\Seen) UID 1)" in answer
    assert b"p5 OK [COPYUID " in answer and b" 1 1] COPY completed" in answer


def test_malformed_commands_get_bad_and_the_session_stays_until_the_error_limit(
    node: RunningNode, ca: TestCa
) -> None:
    sock = raw(node, ca)
    sock.sendall(b"b1 FROB\r\nb2 NOOP (\r\nb3 NOOP\r\n")
    answer = read_until(sock, b"b3 OK NOOP completed\r\n")
    assert b"b1 BAD" in answer and b"b2 BAD" in answer
    sock.sendall(b"b4 )\r\nb5 \x00\r\nb6 LOGIN\r\n")
    answer = read_until(sock, b"* BYE Too many errors\r\n")
    assert answer.count(b" BAD ") == 3
    assert sock.recv(100) == b""  # closed


# --- bounds, from a client that never logged in -------------------------------------------------
def test_a_long_line_is_refused_and_the_session_goes_on(node: RunningNode, ca: TestCa) -> None:
    sock = raw(node, ca)
    sock.sendall(b"l1 NOOP " + b"x" * 20_000 + b"\r\nl2 NOOP\r\n")
    answer = read_until(sock, b"l2 OK NOOP completed\r\n")
    assert answer.startswith(b"l1 BAD Command line too long\r\n")


def test_a_silent_client_is_logged_out_before_login(node: RunningNode, ca: TestCa) -> None:
    sock = raw(node, ca)
    assert read_until(sock, b"\r\n") == b"* BYE Autologout; idle for too long\r\n"  # login_timeout
    assert sock.recv(100) == b""


def test_connections_from_one_address_are_bounded(node: RunningNode) -> None:
    host, port = node.address("imap")
    held = [socket.create_connection((host, port), timeout=15, source_address=("127.0.50.200", 0))]
    for _ in range(5):
        held.append(socket.create_connection((host, port), timeout=15, source_address=("127.0.50.200", 0)))
    for sock in held:
        assert read_until(sock, b"\r\n").startswith(b"* OK [CAPABILITY")
    extra = socket.create_connection((host, port), timeout=15, source_address=("127.0.50.200", 0))
    assert read_until(extra, b"\r\n") == b"* BYE Too many connections; try again later\r\n"
    other = socket.create_connection((host, port), timeout=15, source_address=("127.0.50.201", 0))
    assert read_until(other, b"\r\n").startswith(b"* OK")
    for sock in (*held, extra, other):
        sock.close()


def test_an_idle_past_its_limit_is_ended_with_bye(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "long-idle@contoso.com")
    sock = raw(node, ca)
    sock.sendall(f"i1 LOGIN {address} {PASSWORD}\r\ni2 SELECT INBOX\r\ni3 IDLE\r\n".encode())
    assert read_until(sock, b"+ idling\r\n").endswith(b"+ idling\r\n")
    assert read_until(sock, b"\r\n") == b"* BYE IDLE for too long\r\n"  # idle_max


# --- several sessions ---------------------------------------------------------------------------
def test_idle_is_woken_by_an_smtp_delivery_within_a_second(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "idler@contoso.com")
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        imap.idle()
        started = time.monotonic()
        deliver(node, address, "wake up")
        sent = time.monotonic()
        responses = imap.idle_check(timeout=5)
        woken = time.monotonic()
        imap.idle_done()
        assert (1, b"EXISTS") in responses
        assert woken - sent < 1.0, (
            f"IDLE woke {woken - sent:.2f} s after the delivery (sent at {sent - started:.2f})"
        )


def test_idle_is_woken_by_a_change_made_in_another_process(node: RunningNode, ca: TestCa) -> None:
    """Another process of the node (here a second `App` on the same data directory, as a worker or
    a CLI command is) appends: its announcement crosses the notification channel."""
    address = mailbox(node, "crossing@contoso.com")
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        imap.idle()
        other = App.open(node.settings)
        try:
            store_uncached(other, address, message("from another process"))
        finally:
            other.close()  # sends what it published before it exits
        responses = imap.idle_check(timeout=5)
        imap.idle_done()
        assert (1, b"EXISTS") in responses


def store_uncached(app: App, address: str, content: bytes) -> None:
    """A message in the inbox without its cached IMAP texts (as delivery stores one), by `app`."""
    recipient = app.directory.get_recipient(OPERATOR, address)
    blob_id = app.blobs.put(content)
    with app.database.write() as conn:
        inbox = mailstore.find_folder(conn, recipient.id, mailstore.INBOX)
        assert inbox is not None
        mailstore.append(
            conn,
            recipient.id,
            inbox.id,
            blob_id=blob_id,
            size=len(content),
            flags=(),
            internal_date=time.time(),
            summary=summarize(content),
        )


def inbox_rows(node: RunningNode, address: str) -> list[mailstore.MessageRecord]:
    recipient = node.app.directory.get_recipient(OPERATOR, address)
    with node.app.database.read() as conn:
        inbox = mailstore.find_folder(conn, recipient.id, mailstore.INBOX)
        assert inbox is not None
        return mailstore.folder_messages(conn, inbox.id)


def test_append_caches_the_imap_texts_and_fetch_answers_the_same_from_them(
    node: RunningNode, ca: TestCa
) -> None:
    address = mailbox(node, "appended@contoso.com")
    content = message("cached at append", body="x" * 300)
    store_uncached(node.app, address, content)
    with client(node, ca, address) as imap:
        imap.append("INBOX", content)
        assert [row.envelope is None for row in inbox_rows(node, address)] == [True, False]
        imap.select_folder("INBOX")
        fetched = {
            seq: {key: value for key, value in items.items() if key != b"SEQ"}
            for seq, items in imap.fetch([1, 2], ["ENVELOPE", "BODYSTRUCTURE"]).items()
        }
        assert fetched[1] == fetched[2] and fetched[1]  # from the bytes and from the cache: the same
        assert imap.search(["SUBJECT", "cached at append"]) == [1, 2]


def test_fetch_fills_the_structure_cache_in_the_background(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "cached@contoso.com")
    store_uncached(node.app, address, message("cache me"))
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        first = imap.fetch([1], ["ENVELOPE", "BODYSTRUCTURE"])[1]
        recipient = node.app.directory.get_recipient(OPERATOR, address)

        def cached() -> bool:
            with node.app.database.read() as conn:
                inbox = mailstore.find_folder(conn, recipient.id, mailstore.INBOX)
                assert inbox is not None
                return mailstore.folder_messages(conn, inbox.id)[0].envelope is not None

        wait_for(cached, timeout=10)
        assert imap.fetch([1], ["ENVELOPE", "BODYSTRUCTURE"])[1] == first  # from the cache, the same


def test_a_header_search_answers_the_same_from_its_cache_without_the_bytes(
    node: RunningNode, ca: TestCa
) -> None:
    address = mailbox(node, "searched@contoso.com")
    tricky = [
        b"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@partner.example>\r\nTo: a@contoso.com\r\n"
        b"Subject: =?ISO-8859-1?Q?Caf=E9?=\r\n =?UTF-8?B?IOKCrCBtZW51?=\r\n\r\nbody\r\n",
        b"From: b@partner.example\r\nTo: first@contoso.com\r\nto: Second <second@contoso.com>\r\n"
        b"Subject: folded\r\n line\r\n\r\nbody\r\n",
        "From: Jürgen <j@partner.example>\r\nSubject: Grüße\r\n\r\nbody\r\n".encode(),
    ]
    searches: list[list[str]] = [  # with CHARSET UTF-8
        ["SUBJECT", "café €"],
        ["FROM", "renee"],
        ["TO", "second"],
        ["HEADER", "Subject", "folded line"],
        ["FROM", "jürgen"],
        ["OR", "SUBJECT", "grü", "TO", "first"],
        ["SENTON", "1-Jan-2026"],  # not cached: reads the bytes
    ]
    expected = [[1], [1], [2], [2], [3], [2, 3], []]
    for raw in tricky:
        store_uncached(node.app, address, raw)
    assert [row.search_headers for row in inbox_rows(node, address)] == [None] * 3
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        assert [imap.search(criteria, "UTF-8") for criteria in searches] == expected  # from the bytes

        def filled() -> bool:  # by the search, in the background
            return all(row.search_headers for row in inbox_rows(node, address))

        wait_for(filled, timeout=10)
        assert [imap.search(criteria, "UTF-8") for criteria in searches] == expected  # from the cache
        # Without the bytes, a cached search still answers; one that reads the bytes finds nothing.
        blob_ids = [row.blob_id for row in inbox_rows(node, address)]
        assert node.app.blobs.discard_unused(blob_ids, stored_before=time.time() + 60) == len(blob_ids)
        assert imap.search(["TO", "second"]) == [2]
        assert imap.search(["TEXT", "second"]) == []


def test_two_sessions_see_each_others_flags_new_mail_and_expunges(node: RunningNode, ca: TestCa) -> None:
    address = mailbox(node, "shared@contoso.com")
    with client(node, ca, address) as first, client(node, ca, address) as second:
        first.append("INBOX", message("one"))
        first.append("INBOX", message("two"))
        first.select_folder("INBOX")
        second.select_folder("INBOX")
        second.idle()
        first.add_flags([1], [b"\\Answered"])
        responses = second.idle_check(timeout=5)
        second.idle_done()
        fetched = [item[2] for item in responses if len(item) == 3 and item[1] == b"FETCH"]
        assert [item[item.index(b"FLAGS") + 1] for item in fetched] == [(b"\\Answered",)]
        first.set_flags([1], [b"\\Deleted"])
        first.expunge()
        first.append("INBOX", message("three"))
        untagged = second.noop()[1]
        assert (1, b"EXPUNGE") in untagged and (2, b"EXISTS") in untagged
        assert second.search("ALL") == [2, 3]


def test_a_folder_deleted_under_a_session_ends_it_and_a_renamed_one_goes_on(
    node: RunningNode, ca: TestCa
) -> None:
    address = mailbox(node, "doomed@contoso.com")
    with client(node, ca, address) as first, client(node, ca, address) as second:
        first.create_folder("Doomed")
        first.create_folder("Renamed")
        first.select_folder("Renamed")
        second.rename_folder("Renamed", "Renamed twice")
        second.append("Renamed twice", message("still here"))
        assert (1, b"EXISTS") in first.noop()[1]
        sock = raw(node, ca)
        sock.sendall(f"d1 LOGIN {address} {PASSWORD}\r\nd2 SELECT Doomed\r\n".encode())
        read_until(sock, b"d2 OK [READ-WRITE] SELECT completed\r\n")
        second.delete_folder("Doomed")
        sock.sendall(b"d3 NOOP\r\n")
        assert read_until(sock, b"\r\n") == b"* BYE The selected folder was deleted\r\n"
        assert sock.recv(100) == b""


def test_one_mailbox_and_tenant_never_reaches_another(node: RunningNode, ca: TestCa) -> None:
    mine = mailbox(node, "mine@contoso.com")
    node.app.directory.add_mailbox(OPERATOR, "theirs@fabrikam.com", password=PASSWORD)
    with client(node, ca, "theirs@fabrikam.com") as theirs:
        theirs.create_folder("Secret")
        theirs.append("Secret", message("their secret"))
    with client(node, ca, mine) as imap:
        names = [name for _, _, name in imap.list_folders()]
        assert "Secret" not in names
        for attempt in ("Secret", "theirs@fabrikam.com/Secret", "../Secret", "#shared/Secret"):
            with pytest.raises(imapclient_error()):
                imap.select_folder(attempt)
        assert imap.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
        imap.select_folder("INBOX")
        assert imap.search("ALL") == []
        assert imap._imap.uid("FETCH", "1:4294967295", "(FLAGS)") == ("OK", [None])  # no other's UID 1


# --- junk reports -------------------------------------------------------------------------------
def test_moving_into_junk_is_a_junk_report_and_out_of_it_a_not_junk_report(
    node: RunningNode, ca: TestCa
) -> None:
    address = mailbox(node, "reporter@contoso.com")
    deliver(node, address, "cheap pills")
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        wait_for(lambda: imap.search("ALL") == [1], timeout=10)
        imap.move([1], "Junk")
        imap.select_folder("Junk")
        imap.move([1], "INBOX")

    def reports() -> list[str]:
        with node.app.database.read() as conn:
            rows = conn.execute(
                select(trace_events.c.detail).where(trace_events.c.event == "JunkReport")
            ).scalars()
            return [str(row) for row in rows]

    wait_for(lambda: len([r for r in reports() if address in r]) == 2, timeout=10)
    mine = [r for r in reports() if address in r]
    assert "'junk'" in mine[0] or '"junk"' in mine[0]
    assert "not-junk" in mine[1]
    learned = Path(node.settings.data_dir / "spam-reports.json")
    wait_for(learned.exists, timeout=10)


def test_one_report_learns_a_bounded_number_of_messages(
    node: RunningNode, ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dragging a whole folder into Junk does not make the node read and post every message: past
    `JUNK_REPORT_MOST` the messages are traced as not learned."""
    monkeypatch.setattr(imap_endpoint, "JUNK_REPORT_MOST", 2)
    address = mailbox(node, "dragger@contoso.com")
    for n in range(3):
        deliver(node, address, f"bulk {n}")
    with client(node, ca, address) as imap:
        imap.select_folder("INBOX")
        wait_for(lambda: imap.search("ALL") == [1, 2, 3], timeout=10)
        imap.move([1, 2, 3], "Junk")

    def results() -> list[str]:
        with node.app.database.read() as conn:
            rows = conn.execute(
                select(trace_events.c.detail).where(trace_events.c.event == "JunkReport")
            ).scalars()
            return [str(row) for row in rows if address in str(row)]

    wait_for(lambda: len(results()) == 3, timeout=10)
    assert sum("learned as spam" in row for row in results()) == 2
    assert sum("not learned: only the first 2 messages" in row for row in results()) == 1


def test_select_lists_the_permanent_flags_with_the_new_keyword_atom(node: RunningNode, ca: TestCa) -> None:
    """RFC 3501 flag-perm: `\\*` (new keywords allowed) is an atom, never the quoted string "\\\\*"."""
    address = mailbox(node, "flags@contoso.com")
    sock = raw(node, ca)
    sock.sendall(f"a LOGIN {address} {PASSWORD}\r\nb SELECT INBOX\r\nc EXAMINE INBOX\r\n".encode())
    answer = read_until(sock, b"c OK [READ-ONLY] EXAMINE completed\r\n")
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)]" in answer
    assert b"* OK [PERMANENTFLAGS ()]" in answer  # read-only: none
    sock.close()
