"""The connection filter through the real MX listener, over smtplib from many loopback addresses: the
service's IP lists at connect, a tenant's lists at RCPT (its recipients only), a DNS blocklist served
by the loopback DNS server (listing, return codes, a tenant's allow, a blocklist that never answers),
the rate limits on the node's own clock, and, from the attacker's side, a flood from many addresses.

Every client binds its own 127.x address, so the tests of the module share one node without sharing
a client: 127.0.1.x the service lists, 127.0.2.x the blocklist, 127.0.3.x contoso's lists, 127.0.4.x
the rates, 127.1.x.x the flood, 127.0.7.x the removed tenant's list.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from prometheus_client import REGISTRY

from postroom.app import App, remove_tenant
from postroom.config import Settings
from postroom.model.flow import EventKind
from postroom.model.scope import OPERATOR, TenantScope
from postroom.trace import TraceQuery
from tests.conftest import Hosted, populate, wait_for
from tests.protection.test_connection import ManualClock
from tests.support.connection_policy import set_connection_policy
from tests.support.dns_server import DnsTestServer, silent_nameserver
from tests.support.node import RunningNode, make_node
from tests.support.records import exported, stored_messages

BLOCKLIST = """\
2.2.0.127 IN A 127.0.0.2
3.2.0.127 IN A 127.0.0.3
4.2.0.127 IN A 127.0.0.4
"""
RATE_TABLE = 16
MESSAGE = b"Subject: through\r\n\r\nhi\r\n"


def inbox(hosted: Hosted, address: str) -> list[bytes]:
    """What reached the mailbox: its Inbox and its Junk folder (the filtering stack is on, and the
    bare test messages of this module may well be judged junk; where they land is not the point)."""
    app = hosted.app
    return [
        exported(app.directory, app.mailstore, address, m.uid, folder)
        for folder in ("Inbox", "Junk")
        for m in stored_messages(app.directory, app.mailstore, address, folder)
    ]


@dataclass
class Node:
    running: RunningNode
    hosted: Hosted
    clock: ManualClock


def filtered(settings: Settings, **protection: object) -> Settings:
    return replace(settings, protection=replace(settings.protection, **protection))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with DnsTestServer({"bl.test": BLOCKLIST}) as dns:
        settings = make_node(
            tmp_path_factory.mktemp("filter") / "node", nameservers=(str(dns.address),), protection=True
        )
        settings = filtered(
            settings,
            ip_allow=("127.0.1.5",),
            ip_block=("127.0.1.0/24",),
            dnsbl=("bl.test=127.0.0.2,127.0.0.4-127.0.0.11",),
            connections_per_minute=5,
            messages_per_minute=3,
            rate_limited_clients=RATE_TABLE,
        )
        app = App.open(settings)
        populate(app)
        set_connection_policy(app, "contoso", ip_allow=["127.0.3.9", "127.0.2.4"], ip_block=["127.0.3.0/24"])
        set_connection_policy(app, "fabrikam", ip_block=["127.0.7.0/24"])
        clock = ManualClock()
        running = RunningNode(settings)
        running.app.rate_clock = clock
        running.start()
        try:
            yield Node(running, Hosted(settings, app), clock)
        finally:
            running.stop()
            app.close()


def client(node: Node, source: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP(source_address=(source, 0), timeout=10)
    smtp.connect(*node.running.mx)
    smtp.ehlo("mta.partner.example")
    return smtp


def rcpt_replies(node: Node, source: str, recipients: list[str]) -> list[tuple[int, str]]:
    """The RCPT replies a client at `source` gets, each in a transaction of its own."""
    with client(node, source) as smtp:
        found = []
        for recipient in recipients:
            assert smtp.mail("news@partner.example")[0] == 250
            code, text = smtp.rcpt(recipient)
            found.append((code, text.decode()))
            smtp.rset()
    return found


def greeting(node: Node, source: str) -> tuple[int, str]:
    smtp = smtplib.SMTP(source_address=(source, 0), timeout=10)
    try:
        code, text = smtp.connect(*node.running.mx)
    except smtplib.SMTPConnectError as refused:
        code, text = refused.smtp_code, refused.smtp_error
    finally:
        smtp.close()
    return code, text.decode()


def test_the_service_block_list_refuses_at_connect_and_its_allow_list_beats_it(node: Node) -> None:
    assert greeting(node, "127.0.1.7") == (
        554,
        "5.7.513 Service unavailable, Client host [127.0.1.7] blocked using the service block list",
    )
    with client(node, "127.0.1.5") as smtp:
        refused = smtp.sendmail(
            "news@partner.example", ["alice@contoso.com"], b"Subject: allowed\r\n\r\nhi\r\n"
        )
    assert refused == {}
    wait_for(lambda: any(b"Subject: allowed" in m for m in inbox(node.hosted, "alice@contoso.com")))


def test_a_tenant_block_refuses_only_that_tenants_recipients_and_is_traced(node: Node) -> None:
    with client(node, "127.0.3.7") as smtp:
        assert smtp.mail("news@partner.example")[0] == 250
        code, text = smtp.rcpt("bob@contoso.com")
        assert (code, text.decode()) == (
            550,
            "5.7.513 Service unavailable, Client host [127.0.3.7] blocked using Customer Block list",
        )
        assert smtp.rcpt("carol@fabrikam.com")[0] == 250
        assert smtp.data(b"Subject: for fabrikam\r\n\r\nhi\r\n")[0] == 250
    wait_for(lambda: any(b"Subject: for fabrikam" in m for m in inbox(node.hosted, "carol@fabrikam.com")))
    assert not any(b"Subject: for fabrikam" in m for m in inbox(node.hosted, "bob@contoso.com"))
    app = node.hosted.app
    contoso = TenantScope(app.directory.get_tenant(OPERATOR, "contoso").id)
    [row] = [r for r in app.trace.search(TraceQuery(), contoso) if r.recipient == "bob@contoso.com"]
    detail = app.trace.detail(row.message_id, contoso)
    assert detail is not None
    [failed] = [e for e in detail.events if e.event == EventKind.FAIL]
    assert "5.7.513" in str(failed.detail["reply"])


def test_a_tenants_allow_beats_its_block(node: Node) -> None:
    assert rcpt_replies(node, "127.0.3.9", ["bob@contoso.com"]) == [(250, "2.1.5 Recipient OK")]


def test_a_blocklist_listing_refuses_unless_the_tenant_allows_and_codes_are_filtered(node: Node) -> None:
    listed = "5.7.1 Service unavailable; client [127.0.2.2] blocked using bl.test"
    assert rcpt_replies(node, "127.0.2.2", ["bob@contoso.com", "carol@fabrikam.com"]) == [
        (550, listed),
        (550, listed),
    ]
    # Listed too (127.0.0.4), but contoso allow-lists it: its recipients get their mail.
    assert [
        code for code, _ in rcpt_replies(node, "127.0.2.4", ["bob@contoso.com", "carol@fabrikam.com"])
    ] == [
        250,
        550,
    ]
    # Answered 127.0.0.3, which this node's codes do not count as a listing.
    assert [code for code, _ in rcpt_replies(node, "127.0.2.3", ["carol@fabrikam.com"])] == [250]


def test_connections_per_minute_give_421_and_the_next_minute_passes(node: Node) -> None:
    for _ in range(5):
        assert greeting(node, "127.0.4.1")[0] == 220
    assert greeting(node, "127.0.4.1") == (
        421,
        "4.7.0 Too many connections per minute from your address, try again later",
    )
    node.clock.advance(60)
    assert greeting(node, "127.0.4.1")[0] == 220


def test_messages_per_minute_give_421_and_the_next_minute_passes(node: Node) -> None:
    with client(node, "127.0.4.2") as smtp:
        for _ in range(3):
            assert smtp.mail("news@partner.example")[0] == 250
            smtp.rset()
        code, text = smtp.mail("news@partner.example")
        assert (code, text.decode()) == (
            421,
            "4.7.0 Too many messages per minute from your address, try again later",
        )
    node.clock.advance(60)
    with client(node, "127.0.4.2") as smtp:
        assert smtp.mail("news@partner.example")[0] == 250


def test_a_flood_from_many_addresses_does_not_grow_the_rate_table(node: Node) -> None:
    for n in range(RATE_TABLE * 6):
        source = f"127.1.{n // 250}.{1 + n % 250}"
        with client(node, source) as smtp:
            smtp.mail("flood@evil.example")
        assert REGISTRY.get_sample_value("postroom_rate_limited_clients") <= RATE_TABLE  # type: ignore[operator]
    assert REGISTRY.get_sample_value("postroom_rate_limited_clients") == RATE_TABLE
    assert rcpt_replies(node, "127.0.4.3", ["carol@fabrikam.com"]) == [(250, "2.1.5 Recipient OK")]


def test_a_new_tenant_with_a_removed_tenants_names_has_none_of_its_lists(node: Node) -> None:
    app = node.hosted.app
    assert rcpt_replies(node, "127.0.7.1", ["carol@fabrikam.com"])[0][0] == 550
    remove_tenant(app.database, app.blobs, app.directory, OPERATOR, "fabrikam", apply=True)
    app.directory.add_tenant(OPERATOR, "fabrikam")
    app.directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    app.directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    wait_for(lambda: rcpt_replies(node, "127.0.7.1", ["carol@fabrikam.com"])[0][0] == 250)


def test_a_blocklist_that_never_answers_does_not_refuse(tmp_path_factory: pytest.TempPathFactory) -> None:
    with silent_nameserver() as nameserver:
        settings = make_node(
            tmp_path_factory.mktemp("silent") / "node", nameservers=(str(nameserver),), protection=True
        )
        settings = filtered(replace(settings, dns=replace(settings.dns, timeout=0.5)), dnsbl=("bl.test",))
        app = App.open(settings)
        populate(app)
        running = RunningNode(settings).start()
        try:
            with smtplib.SMTP(source_address=("127.0.2.2", 0), timeout=10) as smtp:
                smtp.connect(*running.mx)
                refused = smtp.sendmail(
                    "news@partner.example", ["carol@fabrikam.com"], b"Subject: t\r\n\r\nhi\r\n"
                )
            assert refused == {}
            hosted = Hosted(settings, app)
            wait_for(lambda: len(inbox(hosted, "carol@fabrikam.com")) == 1)
        finally:
            running.stop()
            app.close()
