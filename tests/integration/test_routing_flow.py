"""Routing through a real node: group expansion bounded per message, another tenant as a remote
organization, postmaster, group delivery restrictions, the mail log line, and trace by mailbox.

Each test sets up the directory first, then starts the node (its directory cache sees the setup),
then talks SMTP to it over loopback; the CLI runs as a real process.
"""

from __future__ import annotations

import json
import logging
import smtplib
from dataclasses import replace

import pytest

from postroom.config import ListenAddress
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage.schema import queue_recipients
from postroom.trace import TraceQuery
from tests.cli.test_commands import postroom
from tests.conftest import Hosted, wait_for
from tests.integration.test_hosted_flow import inbox
from tests.support.dns_server import DnsTestServer
from tests.support.node import running
from tests.support.sink import free_port

BODY = b"From: news@partner.example\r\nSubject: hello\r\nMessage-ID: <%s@partner.example>\r\n\r\nhi\r\n"


def body(message_id: str) -> bytes:
    return BODY % message_id.encode()


def test_a_lattice_of_nested_groups_is_expanded_once_per_message(hosted: Hosted) -> None:
    directory = hosted.app.directory
    width, layers = 5, 4  # 5 ** 4 = 625 paths from the top group to each mailbox
    for layer in reversed(range(layers)):
        below = (
            [f"g{layer + 1}-{n}@contoso.com" for n in range(width)]
            if layer + 1 < layers
            else ["alice@contoso.com", "bob@contoso.com"]
        )
        for n in range(width):
            directory.add_group(OPERATOR, f"g{layer}-{n}@contoso.com", members=below)
    directory.add_group(
        OPERATOR, "everyone@contoso.com", members=[f"g0-{n}@contoso.com" for n in range(width)]
    )
    hosted.app.directory.set_external_senders(OPERATOR, "everyone@contoso.com", True)
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        assert client.sendmail("news@partner.example", ["everyone@contoso.com"], body("lattice")) == {}
    assert len(inbox(hosted, "alice@contoso.com")) == 1
    assert len(inbox(hosted, "bob@contoso.com")) == 1
    [row] = hosted.app.trace.search(TraceQuery(recipient="everyone@contoso.com"), OPERATOR)
    detail = hosted.app.trace.detail(row.message_id, OPERATOR)
    assert detail is not None
    groups = 1 + width * layers
    assert len(detail.events) <= 1 + groups + 2  # Receive, an Expand per group, a Deliver per mailbox
    assert len(detail.recipients) == groups + 2


def test_recipients_past_the_expansion_limit_fail_and_the_rest_are_delivered(hosted: Hosted) -> None:
    directory = hosted.app.directory
    for n in range(6):
        directory.add_mailbox(OPERATOR, f"staff{n}@contoso.com")
    directory.add_group(OPERATOR, "staff@contoso.com", members=[f"staff{n}@contoso.com" for n in range(6)])
    hosted.app.directory.set_external_senders(OPERATOR, "staff@contoso.com", True)
    settings = replace(hosted.settings, routing=replace(hosted.settings.routing, max_expanded_recipients=4))
    with running(settings) as node, smtplib.SMTP(*node.mx) as client:
        assert client.sendmail("news@partner.example", ["staff@contoso.com"], body("limit")) == {}
    delivered = [n for n in range(6) if inbox(hosted, f"staff{n}@contoso.com")]
    assert delivered == [0, 1, 2, 3]
    [row] = hosted.app.trace.search(TraceQuery(recipient="staff@contoso.com"), OPERATOR)
    detail = hosted.app.trace.detail(row.message_id, TenantScope(row.tenant_id or 0))
    assert detail is not None
    [fail] = [e for e in detail.events if e.event == "Fail"]
    assert fail.detail["limit"] == "routing.max_expanded_recipients"
    assert fail.detail["count"] == 2 and str(fail.detail["reply"]).startswith("550 5.5.3")


def test_a_member_in_another_tenant_gets_the_mail_through_the_mx_as_mail_from_outside(
    hosted: Hosted, dns_server: DnsTestServer
) -> None:
    app = hosted.app
    # Members are the tenant's own recipients: fabrikam's carol joins as contoso's mail contact.
    app.directory.add_contact(OPERATOR, "carol.fabrikam@contoso.com", external_address="carol@fabrikam.com")
    members = ["alice@contoso.com", "carol.fabrikam@contoso.com"]
    app.directory.add_group(OPERATOR, "crew@contoso.com", members=members)
    app.directory.set_external_senders(OPERATOR, "crew@contoso.com", True)
    contoso = TenantScope(app.directory.get_tenant(OPERATOR, "contoso").id)
    fabrikam = TenantScope(app.directory.get_tenant(OPERATOR, "fabrikam").id)
    # fabrikam.com's MX is this service (as a hosted domain's is): the node's own MX listener.
    port = free_port()
    dns_server.set_zone("fabrikam.com", "@ MX 10 mx.fabrikam.com.\nmx A 127.0.0.1\n")
    settings = replace(
        hosted.settings,
        mx=replace(hosted.settings.mx, listen=(ListenAddress("127.0.0.1", port),)),
        dns=dns_server.settings(),
        delivery=replace(hosted.settings.delivery, smtp_port=port),
    )
    with running(settings) as node:
        with smtplib.SMTP(*node.mx) as client:
            message = b"From: news@partner.example\r\nSubject: Contoso's secret plans\r\n\r\nhi\r\n"
            assert client.sendmail("news@partner.example", ["crew@contoso.com"], message) == {}
        wait_for(lambda: len(inbox(hosted, "carol@fabrikam.com")) == 1)
    assert len(inbox(hosted, "alice@contoso.com")) == 1
    rows = {r.recipient: r for r in app.trace.search(TraceQuery(), contoso)}
    assert {k: (r.status, r.resolved) for k, r in rows.items()} == {
        "crew@contoso.com": (TraceStatus.EXPANDED, "crew@contoso.com"),
        "alice@contoso.com": (TraceStatus.DELIVERED, "alice@contoso.com"),
        "carol.fabrikam@contoso.com": (TraceStatus.DELIVERED, "carol@fabrikam.com"),
    }
    sent = rows["carol.fabrikam@contoso.com"].message_id
    detail = app.trace.detail(sent, contoso)
    assert detail is not None and [e.event for e in detail.events if e.event == "Send"] == ["Send"]
    # fabrikam sees only the copy it received from outside, never contoso's message or its trace.
    assert app.trace.detail(sent, fabrikam) is None
    [received] = app.trace.search(TraceQuery(), fabrikam)
    assert received.message_id != sent and received.recipient == "carol@fabrikam.com"
    with app.database.read() as conn:
        assert conn.execute(queue_recipients.select()).all() == []


def test_postmaster_is_accepted_and_delivered(hosted: Hosted) -> None:
    settings = replace(
        hosted.settings, service=replace(hosted.settings.service, postmaster="bob@contoso.com")
    )
    with running(settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("dmarc-reports@partner.example")[0] == 250
        assert client.rcpt("<postmaster>")[0] == 250
        assert client.rcpt("postmaster@contoso.com")[0] == 250
        assert client.rcpt("PostMaster@fabrikam.com")[0] == 250
        assert client.data(body("report"))[0] == 250
    assert len(inbox(hosted, "bob@contoso.com")) == 1  # the service operator's postmaster
    assert len(inbox(hosted, "alice@contoso.com")) == 1  # contoso's first mailbox stands in
    assert len(inbox(hosted, "carol@fabrikam.com")) == 1
    rows = hosted.app.trace.search(TraceQuery(addresses=("alice@contoso.com",)), OPERATOR)
    assert [(r.recipient, r.resolved) for r in rows] == [("postmaster@contoso.com", "alice@contoso.com")]


def test_postmaster_setting_through_the_cli_and_an_unset_service_postmaster(hosted: Hosted) -> None:
    changed = postroom(
        "tenant", "set", "contoso", "--postmaster", "bob@contoso.com", config=hosted.settings.source
    )
    assert changed.returncode == 0, changed.stderr
    shown = json.loads(postroom("tenant", "show", "contoso", "--json", config=hosted.settings.source).stdout)
    assert (shown["postmaster"], shown["postmaster_chosen"]) == ("bob@contoso.com", "bob@contoso.com")
    refused = postroom(
        "tenant", "set", "fabrikam", "--postmaster", "alice@contoso.com", config=hosted.settings.source
    )
    assert (
        refused.returncode == 1
        and "not a mailbox or group of tenant fabrikam" in refused.stdout + refused.stderr
    )
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("reports@partner.example")[0] == 250
        code, text = client.rcpt("<postmaster>")  # postmaster@postroom.test is not hosted here
        assert (code, text.split()[0]) == (451, b"4.3.5")
        assert client.rcpt("postmaster@contoso.com")[0] == 250
        assert client.data(body("chosen"))[0] == 250
    assert len(inbox(hosted, "bob@contoso.com")) == 1
    assert inbox(hosted, "alice@contoso.com") == []


def test_a_group_refuses_outside_senders_unless_it_allows_them(hosted: Hosted) -> None:
    source = hosted.settings.source
    added = postroom("group", "add", "board@contoso.com", "--member", "alice@contoso.com", config=source)
    assert added.returncode == 0, added.stderr
    shown = json.loads(postroom("group", "show", "board@contoso.com", "--json", config=source).stdout)
    assert shown["allow_external_senders"] is False
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("x@partner.example")[0] == 250
        code, text = client.rcpt("board@contoso.com")
        assert (code, text.split()[0]) == (550, b"5.7.133")
        client.rset()
    wait_for(lambda: hosted.app.trace.search(TraceQuery(recipient="board@contoso.com"), OPERATOR))
    [row] = hosted.app.trace.search(TraceQuery(recipient="board@contoso.com"), OPERATOR)
    assert row.status is TraceStatus.FAILED
    allowed = postroom("group", "set", "board@contoso.com", "--allow-external-senders", config=source)
    assert allowed.returncode == 0 and "outside" in allowed.stdout
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        assert client.sendmail("x@partner.example", ["board@contoso.com"], body("board")) == {}
    assert len(inbox(hosted, "alice@contoso.com")) == 1


def test_each_transaction_has_one_mail_log_line(hosted: Hosted, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="postroom")
    hosted.app.directory.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        client.mail("news@partner.example")
        client.rcpt("al@contoso.com")
        client.rcpt("nobody@contoso.com")
        client.rcpt("partner@contoso.com")
        assert client.data(body("logged"))[0] == 250
        hops = b"".join(
            b"Received: from hop by relay.example; Fri, 27 Nov 2026 08:00:00 +0000\r\n" for _ in range(31)
        )
        client.mail("loop@partner.example")
        client.rcpt("bob@contoso.com")
        assert client.data(hops + b"\r\nx\r\n")[0] == 554
    lines = [r.getMessage() for r in caplog.records if r.name == "postroom.app.mx"]
    [queued] = [line for line in lines if line.startswith("queued ")]
    assert "client=127.0.0.1 from=<news@partner.example>" in queued
    assert "to=<al@contoso.com> status=delivered" in queued
    assert "to=<nobody@contoso.com> status=failed (550 5.4.1" in queued
    assert "to=<partner@contoso.com> status=queued" in queued
    assert " size=" in queued and " time=" in queued and " id=" in queued
    [refused] = [line for line in lines if line.startswith("refused ")]
    assert (
        "from=<loop@partner.example>" in refused
        and "to=<bob@contoso.com> status=failed (554 5.4.14" in refused
    )


def test_trace_by_mailbox_finds_mail_to_every_address_through_the_cli(hosted: Hosted) -> None:
    with running(hosted.settings) as node, smtplib.SMTP(*node.mx) as client:
        assert client.sendmail("x@partner.example", ["AL@contoso.com"], body("alias")) == {}
        assert client.sendmail("x@partner.example", ["alice@contoso.com"], body("primary")) == {}
        assert client.sendmail("x@partner.example", ["carol@fabrikam.com"], body("other")) == {}
    source = hosted.settings.source
    found = postroom("trace", "--mailbox", "al@contoso.com", "--json", config=source)
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert sorted((r["recipient"], r["resolved"]) for r in rows) == [
        ("AL@contoso.com", "alice@contoso.com"),
        ("alice@contoso.com", "alice@contoso.com"),
    ]
    table = postroom("trace", "--recipient", "alice@contoso.com", config=source).stdout
    assert "AL@contoso.com" in table and "resolved to" in table
    as_fabrikam = postroom(
        "trace", "--mailbox", "alice@contoso.com", "--tenant", "fabrikam", "--json", config=source
    )
    assert as_fabrikam.returncode == 1 and "no recipient has the address" in as_fabrikam.stderr
    everyone = json.loads(postroom("trace", "--json", config=source).stdout)
    assert {r["recipient"] for r in everyone} == {"AL@contoso.com", "alice@contoso.com", "carol@fabrikam.com"}
