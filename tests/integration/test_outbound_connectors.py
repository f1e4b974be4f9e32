"""Outbound connectors through a whole running node, with a real Postfix as the partner's smart host
(STARTTLS with a certificate from a test CA for smtp.partner.test) and a Postroom-run sink as an
organization's on-premises server, all on loopback, names in a loopback DNS server.

Each tenant has the connector its test is about: contoso a Partner connector to Postfix by IP (plus
one that validates a name Postfix's certificate does not have, and one whose smart host is this
service), fabrikam one by name with domain validation, northwind one that uses MX with certificate
validation, hybrid an OnPremises connector with centralized mail transport. Messages are submitted
as the tenants' users (SMTP AUTH) or sent to the MX as the internet would; the tests assert where
they landed (Postfix's Maildir, the sink, a mailbox), the queue's and trace's words, the NDR, and
what `postroom connector validate` reports with Postfix up and down.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner, Result

from postroom.app import App
from postroom.cli import output
from postroom.cli.connector_validation import register
from postroom.cli.context import state
from postroom.cli.main import app as postroom_cli
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.model.scope import OPERATOR
from postroom.storage.schema import connector_validations, queue_recipients
from tests.conftest import wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, reload, running
from tests.support.outbound_connectors import TestAuthority, add_outbound_connector
from tests.support.postfix import PostfixLab, free_port
from tests.support.records import stored_messages
from tests.support.sink import SmtpSink

POSTFIX_HOST, ON_PREMISES_HOST = "127.0.0.71", "127.0.0.72"
PARTNER = "user@partner.test"  # Postfix's one mailbox
RETRY_SCHEDULE = (
    "retry_schedule = [\n"
    + "".join(f"    {seconds},\n" for seconds in (300.0, 300.0, 600.0, 900.0, 1800.0, 3600.0))
    + "]"
)


@dataclass
class TlsPostfix(PostfixLab):
    """The lab's Postfix offering STARTTLS with `certificate`; `pause`/`resume` stop and start it."""

    certificate: Path = Path()
    key: Path = Path()

    def setup(self) -> None:
        super().setup()
        with (self.config_dir / "main.cf").open("a") as main_cf:
            main_cf.write(
                f"smtpd_tls_cert_file = {self.certificate}\n"
                f"smtpd_tls_key_file = {self.key}\n"
                "smtpd_tls_security_level = may\n"
            )

    def pause(self) -> None:
        self._postfix("stop")
        wait_for(lambda: not _listening(self.host, self.port), timeout=15)

    def resume(self) -> None:
        self._postfix("start")
        wait_for(lambda: _listening(self.host, self.port), timeout=30)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as probe:
            probe.recv(512)
        return True
    except OSError:
        return False


class SinkThread:
    """An SmtpSink serving on an event loop of its own, in a thread."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="on-premises", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(sink.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class World:
    node: RunningNode
    postfix: TlsPostfix
    on_premises: SmtpSink
    connectors: dict[str, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("connectors")
    authority = TestAuthority(directory)
    certificate, key = authority.issue("postfix", ["smtp.partner.test"])
    port = free_port(POSTFIX_HOST)
    zones = {
        "partner.test": f"@ MX 10 smtp\nsmtp A {POSTFIX_HOST}\n",
        "postroom.test": "mx A 127.0.0.1\n",
    }
    with (
        DnsTestServer(zones) as dns,
        TlsPostfix(
            port=port,
            host=POSTFIX_HOST,
            domain="partner.test",
            in_flow_delay="0s",
            certificate=certificate,
            key=key,
        ) as postfix,
    ):
        sink = SinkThread(SmtpSink(ON_PREMISES_HOST, port, hostname="exchange.hybrid.test"))
        try:
            settings = make_node(directory / "node", nameservers=(f"{dns.host}:{dns.port}",))
            text = settings.source.read_text()
            for old, new in {
                "smtp_port = 25": f"smtp_port = {port}",
                'tls_ca_file = ""': f'tls_ca_file = "{authority.ca}"',
                "connect_timeout = 30.0": "connect_timeout = 3.0",
                "command_timeout = 300.0": "command_timeout = 10.0",
                RETRY_SCHEDULE: "retry_schedule = [1.0]",
            }.items():
                assert old in text, old
                text = text.replace(old, new)
            settings.source.write_text(text)
            settings = reload(settings)
            app = App.open(settings)
            connectors = configure(app, f"{POSTFIX_HOST}:{port}", f"{ON_PREMISES_HOST}:{port}")
            app.close()
            with running(settings) as node:
                yield World(node, postfix, sink.sink, connectors)
        finally:
            sink.close()


def configure(app: App, postfix: str, on_premises: str) -> dict[str, int]:
    d, db = app.directory, app.database
    ids: dict[str, int] = {}
    for tenant, domain, user in (
        ("contoso", "contoso.com", "alice"),
        ("fabrikam", "fabrikam.com", "carol"),
        ("northwind", "northwind.test", "dave"),
        ("hybrid", "hybrid.test", "cloud"),
    ):
        d.add_tenant(OPERATOR, tenant)
        d.add_domain(OPERATOR, domain, tenant, verified=True)
        d.add_mailbox(OPERATOR, f"{user}@{domain}", password=f"{user}-password")
        ids[tenant] = d.get_tenant(OPERATOR, tenant).id
    partner, on_prem = ConnectorType.PARTNER, ConnectorType.ON_PREMISES
    ids["by ip"] = add_outbound_connector(
        db,
        ids["contoso"],
        "Partner by IP",
        partner,
        recipient_domains=["partner.test"],
        smart_hosts=[postfix],
        validation_recipients=[PARTNER],
    )
    ids["wrong name"] = add_outbound_connector(
        db,
        ids["contoso"],
        "Wrong name",
        partner,
        recipient_domains=["wrongname.test"],
        smart_hosts=[postfix],
        tls=OutboundTls.DOMAIN_VALIDATION,
        tls_domain="mail.wrongname.test",
    )
    ids["myself"] = add_outbound_connector(
        db,
        ids["contoso"],
        "Myself",
        partner,
        recipient_domains=["loop.test"],
        smart_hosts=["mx.postroom.test"],
    )
    ids["by name"] = add_outbound_connector(
        db,
        ids["fabrikam"],
        "Partner by name",
        partner,
        recipient_domains=["partner.test"],
        smart_hosts=["smtp.partner.test"],
        tls=OutboundTls.DOMAIN_VALIDATION,
        tls_domain="*.partner.test",
    )
    ids["use mx"] = add_outbound_connector(
        db,
        ids["northwind"],
        "Partner by MX",
        partner,
        recipient_domains=["partner.test"],
        tls=OutboundTls.CERTIFICATE_VALIDATION,
    )
    ids["cmt"] = add_outbound_connector(
        db,
        ids["hybrid"],
        "To Exchange on-premises",
        on_prem,
        all_accepted_domains=True,
        smart_hosts=[on_premises],
        route_all_via_on_premises=True,
    )
    return ids


# --- helpers ------------------------------------------------------------------------------------------


def submit(node: RunningNode, user: str, recipient: str, subject: str) -> str:
    """Submit over STARTTLS with SMTP AUTH; the internal id from `250 Queued as`."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*node.address("submission"), timeout=30) as client:
        client.starttls(context=unverified)
        client.login(user, f"{user.partition('@')[0]}-password")
        return transaction(client, user, recipient, subject)


def send_to_mx(node: RunningNode, sender: str, recipient: str, subject: str) -> str:
    """Send as an internet MTA would, to the MX endpoint."""
    with smtplib.SMTP(*node.mx, timeout=30) as client:
        client.ehlo("mta.outside.test")
        return transaction(client, sender, recipient, subject)


def transaction(client: smtplib.SMTP, sender: str, recipient: str, subject: str) -> str:
    assert client.mail(sender)[0] == 250
    code, text = client.rcpt(recipient)
    assert code == 250, text
    content = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@postroom.test>\r\n\r\nHello over a connector.\r\n"
    ).encode()
    code, text = client.data(content)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def events(node: RunningNode, message_id: str) -> list[tuple[str, str, dict[str, object]]]:
    detail = node.app.trace.detail(message_id, OPERATOR)
    assert detail is not None
    return [(e.event, e.recipient, e.detail) for e in detail.events]


def sent(node: RunningNode, message_id: str) -> dict[str, object]:
    wait_for(lambda: any(name == "Send" for name, _, _ in events(node, message_id)), timeout=30)
    return next(detail for name, _, detail in events(node, message_id) if name == "Send")


def maildir_subjects(lab: PostfixLab) -> list[bytes]:
    return [
        line
        for sub in ("new", "cur")
        for path in (lab.maildir / sub).iterdir()
        for line in path.read_bytes().splitlines()
        if line.startswith(b"Subject:")
    ]


def queue_row(node: RunningNode, message_id: str) -> tuple[str, str] | None:
    with node.app.database.read() as conn:
        row = conn.execute(
            select(queue_recipients.c.state, queue_recipients.c.last_reply).where(
                queue_recipients.c.message_id == message_id
            )
        ).first()
    return None if row is None else (row.state, row.last_reply)


_CLI = typer.Typer()
_CONNECTOR = typer.Typer()


@_CONNECTOR.callback()
def _connector_group() -> None:
    """Connectors."""


register(_CONNECTOR)
_CLI.add_typer(_CONNECTOR, name="connector")


def cli(node: RunningNode, *args: str, app: typer.Typer = postroom_cli) -> Result:
    """A `postroom` command against the node's config, in this process (as the CLI opens the node)."""
    state.config, state.node = str(node.settings.source), None
    # A 200-column terminal, as tests/cli give their subprocesses: the console reads COLUMNS only once,
    # when it is made, so a narrower one inherited by this process would fold the tables.
    width, output.console.width = output.console.width, 200
    try:
        prefix = ["-c", state.config] if app is postroom_cli else []  # its root option sets the config
        return CliRunner().invoke(app, [*prefix, *args])
    finally:
        output.console.width = width
        if state.node is not None:
            state.node.close()
        state.config, state.node = None, None


def validate(node: RunningNode, *args: str) -> Result:
    """`postroom connector validate ...` (the lead wires `register` into `postroom connector`)."""
    return cli(node, "connector", "validate", *args, app=_CLI)


# --- delivery over connectors ------------------------------------------------------------------------


def test_a_partner_connector_by_ip_delivers_to_postfix_over_tls(world: World) -> None:
    node = world.node
    message_id = submit(node, "alice@contoso.com", PARTNER, "Over the partner connector")
    send = sent(node, message_id)
    assert send["remote_ip"] == POSTFIX_HOST and str(send["reply"]).startswith("250 ")
    assert str(send["tls"]).startswith("TLSv1") and send["connector_id"] == world.connectors["by ip"]
    resolve = [d for name, _, d in events(node, message_id) if name == "Resolve" and "connector" in d]
    assert resolve == [{"connector": "Partner by IP", "to": PARTNER}]
    wait_for(lambda: b"Subject: Over the partner connector" in maildir_subjects(world.postfix), timeout=30)


def test_a_smart_host_by_name_with_domain_validation(world: World) -> None:
    message_id = submit(world.node, "carol@fabrikam.com", PARTNER, "By name, name validated")
    send = sent(world.node, message_id)
    assert send["remote_host"] == "smtp.partner.test" and str(send["tls"]).startswith("TLSv1")
    assert send["connector_id"] == world.connectors["by name"]
    wait_for(lambda: b"Subject: By name, name validated" in maildir_subjects(world.postfix), timeout=30)


def test_a_connector_using_mx_with_certificate_validation(world: World) -> None:
    message_id = submit(world.node, "dave@northwind.test", PARTNER, "By MX, chain validated")
    send = sent(world.node, message_id)
    assert send["remote_host"] == "smtp.partner.test" and send["connector_id"] == world.connectors["use mx"]
    wait_for(lambda: b"Subject: By MX, chain validated" in maildir_subjects(world.postfix), timeout=30)


def test_a_certificate_for_another_name_defers_4_7_320_and_the_queue_names_the_connector(
    world: World,
) -> None:
    node = world.node
    message_id = submit(node, "alice@contoso.com", "someone@wrongname.test", "Wrong name")
    wait_for(lambda: (queue_row(node, message_id) or ("", ""))[1].startswith("450 4.7.320"), timeout=30)
    assert "smtp.partner.test" in (queue_row(node, message_id) or ("", ""))[1]  # what the certificate names
    shown = cli(node, "queue", "show", message_id)
    assert shown.exit_code == 0, shown.output
    assert "wrongname.test via Wrong name" in shown.stdout
    listed = cli(node, "queue", "list", "--json")
    [entry] = [m for m in json.loads(listed.stdout) if m["id"] == message_id]
    assert entry["routes"] == ["wrongname.test via Wrong name"]
    [row] = entry["recipients"]
    assert (row["connector_id"], row["connector"]) == (world.connectors["wrong name"], "Wrong name")
    node.app.queue.delete(OPERATOR, message_id)


def test_a_smart_host_that_is_this_service_fails_5_4_14_and_the_sender_gets_an_ndr(world: World) -> None:
    node = world.node
    message_id = submit(node, "alice@contoso.com", "someone@loop.test", "To myself")
    wait_for(lambda: queue_row(node, message_id) is None, timeout=30)
    fail = [d for name, _, d in events(node, message_id) if name == "Fail"]
    assert fail and str(fail[-1]["reply"]).startswith("554 5.4.14")
    app = node.app

    def ndr() -> bool:
        return any(
            m.subject == "Undeliverable: To myself"
            for m in stored_messages(app.directory, app.mailstore, "alice@contoso.com")
        )

    wait_for(ndr, timeout=30)


def test_centralized_mail_transport_sends_a_cloud_mailboxs_mail_to_on_premises(world: World) -> None:
    node = world.node
    message_id = send_to_mx(node, "dana@outside.test", "cloud@hybrid.test", "Via on-premises first")
    wait_for(lambda: len(world.on_premises.messages) == 1, timeout=30)
    [taken] = world.on_premises.messages
    assert taken.recipients == ("cloud@hybrid.test",) and taken.sender == "dana@outside.test"
    assert b"Subject: Via on-premises first" in taken.content
    app = node.app
    assert stored_messages(app.directory, app.mailstore, "cloud@hybrid.test") == []  # not delivered here
    redirect = [d for name, _, d in events(node, message_id) if name == "Redirect"]
    assert redirect == [
        {
            "connector": "To Exchange on-premises",
            "to": "cloud@hybrid.test",
            "centralized_mail_transport": True,
        }
    ]


# --- Postfix down: delivery and validation -----------------------------------------------------------


def test_postfix_down_defers_4_4_316_and_validation_says_so_then_both_recover(world: World) -> None:
    node, lab = world.node, world.postfix
    passed = validate(node, "Partner by IP", "--tenant", "contoso")
    assert passed.exit_code == 0, passed.output
    for step in ("dns", "tcp", "tls", "message"):
        assert step in passed.output
    assert "passed" in passed.output
    lab.pause()
    try:
        failed = validate(node, "partner by ip", "--tenant", "contoso", "--to", PARTNER, "--json")
        assert failed.exit_code == 1, failed.output
        [result] = json.loads(failed.stdout)
        assert result["ok"] is False and result["reply"].startswith("450 4.4.316")
        assert [(s["step"], s["ok"]) for s in result["steps"]] == [("dns", True), ("tcp", False)]
        shown = validate(node, "Partner by IP", "--tenant", "contoso")
        assert shown.exit_code == 1 and "failed 450 4.4.316" in shown.output
        assert "connection refused" in shown.output
        message_id = submit(node, "alice@contoso.com", PARTNER, "While Postfix is down")
        wait_for(lambda: (queue_row(node, message_id) or ("", ""))[1].startswith("450 4.4.316"), timeout=30)
    finally:
        lab.resume()
    wait_for(lambda: queue_row(node, message_id) is None, timeout=30)  # retried: delivered
    wait_for(lambda: b"Subject: While Postfix is down" in maildir_subjects(lab), timeout=30)
    with node.app.database.read() as conn:
        history = conn.execute(
            select(connector_validations.c.ok, connector_validations.c.reply)
            .where(connector_validations.c.connector_id == world.connectors["by ip"])
            .order_by(connector_validations.c.id)
        ).all()
    assert [(ok, reply[:11]) for ok, reply in history] == [
        (True, ""),
        (False, "450 4.4.316"),
        (False, "450 4.4.316"),
    ]


def test_validate_refuses_what_it_cannot_do(world: World) -> None:
    node = world.node
    unknown = validate(node, "Nope", "--tenant", "contoso")
    assert unknown.exit_code == 1 and "no outbound connector 'Nope'" in unknown.output
    theirs = validate(node, "Partner by name", "--tenant", "contoso")  # fabrikam's, not contoso's
    assert theirs.exit_code == 1 and "no outbound connector" in theirs.output
    nobody = validate(node, "Wrong name", "--tenant", "contoso")
    assert nobody.exit_code == 2 and "--to ADDRESS" in nobody.output
    bad = validate(node, "Wrong name", "--tenant", "contoso", "--to", "not an address")
    assert bad.exit_code == 2 and "is not an address" in bad.output
