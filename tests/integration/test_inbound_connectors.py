"""Inbound connectors on a running node, from the attacker's side of every kind of source.

One node serves the module, with the filtering stack on, a loopback DNS server (MX records of the
"internet" and of internal-relay domains, the original sender's SPF) and a test CA as its
`[tls] client_ca_file`. Clients connect from their own loopback addresses (127.0.11.x): a tenant's
on-premises server named by IP, one known by its client certificate, a third-party filter in front
of a tenant, a device, strangers. Relayed mail goes out by MX to Postroom-run sinks; the on-premises
server of the relay and NDR scenario is a real Postfix presenting a client certificate
(`smtp_tls_cert_file`). Assertions are on replies, on where messages landed and on their headers,
and on message trace.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from postroom.app import App
from postroom.app.tenants import remove_tenant
from postroom.directory import DomainType
from postroom.model.connectors import ConnectorType
from postroom.model.scope import OPERATOR, TenantScope
from postroom.trace import TraceQuery, TraceRow
from tests.conftest import populate, wait_for
from tests.support.connection_policy import set_connection_policy
from tests.support.connectors import add_inbound, add_outbound
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, make_node, running
from tests.support.pki import Issued, TestCa, untrusted
from tests.support.postfix import PostfixLab
from tests.support.records import exported, stored_messages
from tests.support.sink import SmtpSink, SunkMessage, free_port

ON_PREM = "127.0.11.10"  # contoso's on-premises server, named by its OnPremises connector
CERT_CLIENT = "127.0.11.11"  # an address no connector names: attributed by certificate only
UNTRUSTED_CLIENT = "127.0.11.13"  # presents a certificate no CA the node knows signed
DRIFTED = "127.0.11.12"  # contoso's server after its address changed
FABRIKAM_ON_PREM = "127.0.11.20"
THIRD_PARTY = "127.0.11.30"  # the filtering service in front of northwind, litware and wingtip
GHOST_ON_PREM = "127.0.11.40"
INTERNET_MX = "127.0.11.50"  # the MX of elsewhere.example: the internet, as a sink
WOODGROVE_ON_PREM = "127.0.11.51"  # the MX of relay.woodgrove.example: an on-premises server
POSTFIX_ON_PREM = "127.0.11.60"
DEVICE = "127.0.11.70"
STRANGER = "127.0.11.99"
ORIGINAL = "198.51.100.7"  # the internet sender behind the third party (its SPF names it)
BLOCKED_ORIGINAL = "198.51.100.66"  # on tailspin's IP Block list

ZONES = {
    "elsewhere.example": f"@ MX 10 mx\nmx A {INTERNET_MX}\n",
    "origin.example": f'@ TXT "v=spf1 ip4:{ORIGINAL} -all"\n',
    "relay.woodgrove.example": f"@ MX 10 onprem\nonprem A {WOODGROVE_ON_PREM}\n",
    # This service's own MX host: mail to it would come straight back.
    "loop.woodgrove.example": "@ MX 0 loop-woodgrove-example.mail.protection.postroom.test.\n",
    "mail.protection.postroom.test": "loop-woodgrove-example A 127.0.0.1\n",
}


@dataclass
class Certificates:
    ca: TestCa
    contoso: Issued  # mail.contoso.com, signed by the CA the node trusts
    filter: Issued  # mx1.filter.example: the third party's
    other: Issued  # mx.other.example: trusted, but naming no tenant's domain nor the third party
    stranger: Issued  # mail.contoso.com, signed by nobody the node trusts


@dataclass
class World:
    app: App
    node: RunningNode
    dns: DnsTestServer
    sinks: dict[str, SmtpSink]
    loop: asyncio.AbstractEventLoop
    certificates: Certificates
    tenants: dict[str, int]
    smtp_port: int


def add_tenant(
    app: App, name: str, domain: str, *mailboxes: str, kind: DomainType = DomainType.AUTHORITATIVE
) -> int:
    tenant = app.directory.add_tenant(OPERATOR, name).id
    app.directory.add_domain(OPERATOR, domain, name, kind, verified=True)
    for mailbox in mailboxes:
        app.directory.add_mailbox(OPERATOR, mailbox)
    return tenant


def set_up(app: App, certificates: Certificates) -> dict[str, int]:
    """The organizations and their connectors (rows written as the connector service would)."""
    populate(app)  # contoso (alice, bob), fabrikam (carol)
    db, d = app.database, app.directory
    contoso = d.get_tenant(OPERATOR, "contoso").id
    fabrikam = d.get_tenant(OPERATOR, "fabrikam").id
    d.add_domain(OPERATOR, "relay.contoso.com", "contoso", DomainType.INTERNAL_RELAY, verified=True)
    d.add_group(OPERATOR, "staff@contoso.com", members=["alice@contoso.com"])  # inside senders only
    on_prem, partner = ConnectorType.ON_PREMISES, ConnectorType.PARTNER
    add_inbound(
        db, contoso, "contoso on-premises", on_prem, sender_ips=[ON_PREM], treat_messages_as_internal=True
    )
    add_inbound(db, contoso, "contoso by certificate", on_prem, tls_certificate_name="*.contoso.com")
    add_outbound(
        db, contoso, "to on-premises", on_prem, recipient_domains=["relay.contoso.com"], smart_hosts=[ON_PREM]
    )
    add_inbound(db, fabrikam, "fabrikam on-premises", on_prem, sender_ips=[FABRIKAM_ON_PREM])
    # Third party in front: locked down to its IP, with enhanced filtering (northwind), without it
    # (litware); wingtip names the third party but does not lock down (enhanced filtering must then
    # trust only the third party's own connections); adatum locks down by certificate.
    northwind = add_tenant(app, "northwind", "northwind.example", "dave@northwind.example")
    add_inbound(
        db,
        northwind,
        "filter",
        partner,
        sender_ips=[THIRD_PARTY],
        restrict_domains_to_ips=True,
        require_tls=False,
        ef_skip_last_ip=True,
    )
    litware = add_tenant(app, "litware", "litware.example", "erin@litware.example")
    add_inbound(
        db,
        litware,
        "filter",
        partner,
        sender_ips=[THIRD_PARTY],
        restrict_domains_to_ips=True,
        require_tls=False,
    )
    wingtip = add_tenant(app, "wingtip", "wingtip.example", "hank@wingtip.example")
    add_inbound(
        db, wingtip, "filter", partner, sender_ips=[THIRD_PARTY], require_tls=False, ef_skip_last_ip=True
    )
    adatum = add_tenant(app, "adatum", "adatum.example", "frank@adatum.example")
    add_inbound(
        db,
        adatum,
        "filter by certificate",
        partner,
        tls_certificate_name="*.filter.example",
        restrict_domains_to_certificate=True,
    )
    # tailspin blocks an address by its IP Block list: behind the third party, enhanced filtering
    # finds it all the same.
    tailspin = add_tenant(app, "tailspin", "tailspin.example", "jo@tailspin.example")
    add_inbound(
        db,
        tailspin,
        "filter",
        partner,
        sender_ips=[THIRD_PARTY],
        restrict_domains_to_ips=True,
        require_tls=False,
        ef_skip_last_ip=True,
    )
    set_connection_policy(app, "tailspin", ip_block=[BLOCKED_ORIGINAL])
    woodgrove = add_tenant(app, "woodgrove", "woodgrove.example", "ivan@woodgrove.example")
    for domain in ("relay.woodgrove.example", "loop.woodgrove.example", "fail.woodgrove.example"):
        d.add_domain(OPERATOR, domain, "woodgrove", DomainType.INTERNAL_RELAY, verified=True)
    adventure = add_tenant(app, "adventure", "adventure.example", "gina@adventure.example")
    ghost = add_tenant(app, "ghost", "ghost.example", "kim@ghost.example")
    add_inbound(db, ghost, "ghost on-premises", on_prem, sender_ips=[GHOST_ON_PREM], require_tls=False)
    return {
        "contoso": contoso,
        "fabrikam": fabrikam,
        "northwind": northwind,
        "litware": litware,
        "wingtip": wingtip,
        "adatum": adatum,
        "woodgrove": woodgrove,
        "tailspin": tailspin,
        "adventure": adventure,
        "ghost": ghost,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("pki")
    ca = TestCa(pki)
    certificates = Certificates(
        ca,
        ca.issue("contoso", ("mail.contoso.com",)),
        ca.issue("filter", ("mx1.filter.example",)),
        ca.issue("other", ("mx.other.example",)),
        untrusted(pki, "stranger", ("mail.contoso.com",)),
    )
    smtp_port = free_port(INTERNET_MX)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sinks", daemon=True)
    thread.start()
    sinks = {
        "internet": SmtpSink(INTERNET_MX, smtp_port, hostname="mx.elsewhere.example"),
        "woodgrove": SmtpSink(WOODGROVE_ON_PREM, smtp_port, hostname="onprem.relay.woodgrove.example"),
    }
    for sink in sinks.values():
        asyncio.run_coroutine_threadsafe(sink.start(), loop).result(10)
    try:
        with DnsTestServer(ZONES) as dns:
            dns.set_failure("fail.woodgrove.example", "SERVFAIL")
            settings = make_node(
                tmp_path_factory.mktemp("node"), nameservers=(f"127.0.0.1:{dns.port}",), protection=True
            )
            settings = replace(
                settings,
                tls=replace(settings.tls, client_ca_file=str(ca.certificate)),
                delivery=replace(settings.delivery, smtp_port=smtp_port),
            )
            app = App.open(settings)
            tenants = set_up(app, certificates)
            with running(settings) as node:
                yield World(app, node, dns, sinks, loop, certificates, tenants, smtp_port)
            app.close()
    finally:
        for sink in sinks.values():
            asyncio.run_coroutine_threadsafe(sink.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def client_context(certificate: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the node's self-signed certificate
    if certificate is not None:
        context.load_cert_chain(certificate.certificate, certificate.key)
    return context


@contextmanager
def smtp(
    world: World, source: str, *, tls: bool = False, certificate: Issued | None = None
) -> Iterator[smtplib.SMTP]:
    """A session with the node's MX endpoint from `source`, after EHLO (and STARTTLS)."""
    with smtplib.SMTP(*world.node.mx, source_address=(source, 0), timeout=10) as client:
        client.ehlo(f"client-{source}.example")
        if tls or certificate is not None:
            client.starttls(context=client_context(certificate))
            client.ehlo(f"client-{source}.example")
        yield client


def said(answer: tuple[int, bytes]) -> str:
    return f"{answer[0]} {answer[1].decode()}"


def message(
    subject: str, sender: str = "app@contoso.com", to: str = "x@elsewhere.example", head: str = ""
) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender or "mailer-daemon@onprem.contoso.com"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    mail["Message-ID"] = make_msgid(domain="contoso.com")
    mail.set_content("The quarterly figures are attached below.\n")
    return head.encode() + mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))


def relay(world: World, client: smtplib.SMTP, sender: str, recipients: list[str], subject: str) -> list[str]:
    """MAIL, each RCPT and (when one was taken) DATA; the replies, as said."""
    answers = [said(client.mail(f"<{sender}>"))]
    taken = False
    for recipient in recipients:
        answer = client.rcpt(recipient)
        answers.append(said(answer))
        taken = taken or answer[0] == 250
    if taken:
        answers.append(said(client.data(message(subject, sender, recipients[0]))))
    else:
        client.rset()
    return answers


def sunk(world: World, sink: str, subject: str) -> SunkMessage | None:
    for found in list(world.sinks[sink].messages):
        if f"Subject: {subject}".encode() in found.content:
            return found
    return None


def landed(world: World, address: str, subject: str) -> bytes | None:
    app = world.app
    for folder in ("Inbox", "Junk"):
        for stored in stored_messages(app.directory, app.mailstore, address, folder):
            if stored.subject == subject:
                return exported(app.directory, app.mailstore, address, stored.uid, folder)
    return None


def traced(world: World, recipient: str, subject: str) -> list[TraceRow]:
    """The trace rows of `recipient` for the message with `subject` (waited for: it is committed
    before its 250, but read here through another connection)."""

    def rows() -> list[TraceRow]:
        found = world.app.trace.search(TraceQuery(recipient=recipient), OPERATOR)
        return [row for row in found if row.subject == subject]

    wait_for(lambda: rows() != [])
    return rows()


def head_of(raw: bytes) -> str:
    return (
        raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace").replace("\r\n\t", " ").replace("\r\n ", " ")
    )


# --- on-premises servers: relay by IP and by certificate ----------------------------------------------------


def test_an_on_premises_server_named_by_ip_relays_its_tenants_mail_out_over_tls(world: World) -> None:
    with smtp(world, ON_PREM) as client:
        # The connector requires TLS (the spec's default): plaintext is refused at MAIL, and retried.
        assert said(client.mail("<app@contoso.com>")) == (
            "451 4.7.321 TenantInboundAttribution; the recipient organization's connector requires TLS"
        )
    with smtp(world, ON_PREM, tls=True) as client:
        answers = relay(world, client, "app@contoso.com", ["partner@elsewhere.example"], "by ip")
    assert answers[:2] == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"]
    assert answers[2].startswith("250 2.6.0")
    wait_for(lambda: sunk(world, "internet", "by ip") is not None)
    found = sunk(world, "internet", "by ip")
    assert found is not None and found.sender == "app@contoso.com"
    assert found.recipients == ("partner@elsewhere.example",)


def test_a_certificate_connector_relays_ndrs_and_senders_of_domains_the_tenant_does_not_own(
    world: World,
) -> None:
    with smtp(world, CERT_CLIENT, certificate=world.certificates.contoso) as client:
        ndr = relay(world, client, "", ["bounced@elsewhere.example"], "undeliverable: by certificate")
        forwarded = relay(
            world, client, "news@notours.example", ["fwd@elsewhere.example"], "forwarded by certificate"
        )
    assert ndr[1] == forwarded[1] == "250 2.1.5 Recipient OK"
    wait_for(lambda: sunk(world, "internet", "undeliverable: by certificate") is not None)
    wait_for(lambda: sunk(world, "internet", "forwarded by certificate") is not None)
    bounce = sunk(world, "internet", "undeliverable: by certificate")
    assert bounce is not None and bounce.sender == ""
    [row] = traced(world, "fwd@elsewhere.example", "forwarded by certificate")
    detail = world.app.trace.detail(row.message_id, TenantScope(world.tenants["contoso"]))
    assert detail is not None
    [receive] = [e for e in detail.events if e.event == "Receive"]
    assert (receive.detail["connector"], receive.detail["connector_match"]) == (
        "contoso by certificate",
        "certificate",
    )


def test_ip_drift_is_refused_with_tenant_attribution(world: World) -> None:
    with smtp(world, DRIFTED, tls=True) as client:
        answers = relay(world, client, "app@contoso.com", ["x@elsewhere.example"], "drifted")
        # Its own tenant's recipients are inbound mail as from anyone.
        inbound = said(client.mail("<app@contoso.com>")), said(client.rcpt("bob@contoso.com"))
    assert answers[1] == "550 5.7.64 TenantAttribution; Relay Access Denied"
    assert inbound[1] == "250 2.1.5 Recipient OK"


def test_an_attributed_server_cannot_relay_for_a_sender_domain_it_does_not_own(world: World) -> None:
    with smtp(world, ON_PREM, tls=True) as client:
        foreign = relay(world, client, "someone@notours.example", ["x@elsewhere.example"], "attr36")
        null = relay(world, client, "", ["x@elsewhere.example"], "attr36 null")  # NDRs need (b)
    assert foreign[1] == null[1] == "550 5.7.64 Relay Access Denied ATTR36"


def test_tenant_b_cannot_relay_as_tenant_a(world: World) -> None:
    with smtp(world, FABRIKAM_ON_PREM, tls=True) as client:
        spoof = relay(world, client, "ceo@contoso.com", ["x@elsewhere.example"], "b as a")
        own = relay(world, client, "carol@fabrikam.com", ["x@elsewhere.example"], "b as b")
    assert spoof[1] == "550 5.7.64 Relay Access Denied ATTR36"
    assert own[1] == "250 2.1.5 Recipient OK"


TRICKS = [
    ("victim%elsewhere.example@contoso.com", "550 5.4.1"),  # the percent hack: an unknown local part
    ("@contoso.com:victim@elsewhere.example", "501 5.1.3"),  # a source route
    ('"victim@elsewhere.example"@contoso.com', "550 5.4.1"),  # a quoted local part holding an @
    ("victim@[127.0.11.50]", "550 5.7.1"),  # an address literal
    ("victim@elsewhere.example.", "501 5.1.3"),  # a trailing dot
    ("VICTIM@ELSEWHERE.EXAMPLE", None),
    ("victim@bücher.example", None),  # an IDN (SMTPUTF8)
    ("victim@xn--bcher-kva.example", None),
    ("victim@contoso.com.elsewhere.example", None),
    ("victim@pending.example", None),  # another tenant's unverified domain
    ("nobody@fabrikam.com", "550 5.4.1"),  # another tenant's domain: its inbound mail, never a relay
    ("nobody@relay.contoso.com", None),  # an internal-relay domain from its own on-premises: a loop
]


@pytest.mark.parametrize(
    ("source", "sender"), [(STRANGER, "x@notours.example"), (ON_PREM, "x@notours.example"), (STRANGER, "")]
)
@pytest.mark.parametrize(("recipient", "expected"), TRICKS, ids=[t[0] for t in TRICKS])
def test_relay_tricks_are_refused(
    world: World, source: str, sender: str, recipient: str, expected: str | None
) -> None:
    attributed = source == ON_PREM
    with smtp(world, source, tls=True) as client:
        client.mail(f"<{sender}>", ["SMTPUTF8"] if not recipient.isascii() else [])
        answer = said(client.rcpt(recipient))
    if recipient == "nobody@relay.contoso.com":
        # From a stranger it is inbound for contoso's on-premises connector; from on-premises a loop.
        assert answer.startswith("550 5.4.1" if attributed else "250 ")
        return
    assert not answer.startswith("250"), answer
    if expected is not None:
        assert answer.startswith(expected), answer
    else:
        assert answer.startswith("550 5.7.64 Relay Access Denied ATTR36" if attributed else "550 5.7.1"), (
            answer
        )


# --- partner connectors: a third party in front -------------------------------------------------------------


def test_mail_that_bypasses_the_third_party_is_refused(world: World) -> None:
    with smtp(world, STRANGER) as client:
        client.mail("<news@origin.example>")
        direct = [
            said(client.rcpt(r))
            for r in ("dave@northwind.example", "erin@litware.example", "bob@contoso.com")
        ]
    assert direct[0].startswith("550 5.7.51 TenantInboundAttribution")
    assert direct[1].startswith("550 5.7.51")
    assert direct[2] == "250 2.1.5 Recipient OK"  # contoso has no third party in front
    with smtp(world, THIRD_PARTY) as client:
        client.mail("<news@origin.example>")
        through = [said(client.rcpt(r)) for r in ("dave@northwind.example", "erin@litware.example")]
    assert through == ["250 2.1.5 Recipient OK"] * 2


def test_a_partner_locked_to_a_certificate_needs_it(world: World) -> None:
    for certificate, expected in (
        (None, "550 5.7.51"),
        (world.certificates.other, "550 5.7.51"),
        (world.certificates.filter, "250"),
    ):
        with smtp(world, STRANGER, tls=True, certificate=certificate) as client:
            client.mail("<news@origin.example>")
            assert said(client.rcpt("frank@adatum.example")).startswith(expected), certificate


ORIGINAL_HOP = (
    f"Received: from mail.origin.example (mail.origin.example [{ORIGINAL}])\r\n"
    "\tby mx1.filter.example (Postfix) with ESMTPS id 4QxYz1; Mon, 30 Nov 2026 06:00:00 +0000\r\n"
)


def send_through(world: World, source: str, recipient: str, subject: str) -> None:
    with smtp(world, source) as client:
        client.ehlo("mx1.filter.example")
        client.sendmail(
            "news@origin.example",
            [recipient],
            message(subject, "news@origin.example", recipient, ORIGINAL_HOP),
        )


def test_enhanced_filtering_judges_the_original_sender_not_the_third_party(world: World) -> None:
    send_through(world, THIRD_PARTY, "dave@northwind.example", "ef on")
    send_through(world, THIRD_PARTY, "erin@litware.example", "ef off")
    wait_for(lambda: landed(world, "dave@northwind.example", "ef on") is not None)
    wait_for(lambda: landed(world, "erin@litware.example", "ef off") is not None)
    on = head_of(landed(world, "dave@northwind.example", "ef on") or b"")
    assert "spf=pass" in on and f"CIP:{ORIGINAL};" in on and "H:mail.origin.example;" in on
    assert f"X-Postroom-SkipListedInternetSender: {ORIGINAL}" in on
    assert f"X-Postroom-ExternalOriginalInternetSender: ip={ORIGINAL}" in on
    # Without enhanced filtering the third party's IP is judged: SPF of the original sender fails.
    off = head_of(landed(world, "erin@litware.example", "ef off") or b"")
    assert "spf=fail" in off and f"CIP:{THIRD_PARTY};" in off
    assert "SkipListedInternetSender" not in off and "ExternalOriginalInternetSender" not in off


def test_enhanced_filtering_applies_the_tenants_ip_block_list_to_the_original_sender(world: World) -> None:
    blocked_hop = ORIGINAL_HOP.replace(ORIGINAL, BLOCKED_ORIGINAL)
    with smtp(world, THIRD_PARTY) as client:
        client.mail("<news@origin.example>")
        assert said(client.rcpt("jo@tailspin.example")) == "250 2.1.5 Recipient OK"  # the third party's IP
        refused = said(
            client.data(message("blocked behind", "news@origin.example", "jo@tailspin.example", blocked_hop))
        )
    assert refused.startswith("550 5.7.513") and refused.endswith(
        f"Client host [{BLOCKED_ORIGINAL}] blocked using Customer Block list"
    )
    send_through(world, THIRD_PARTY, "jo@tailspin.example", "not blocked behind")
    wait_for(lambda: landed(world, "jo@tailspin.example", "not blocked behind") is not None)
    assert landed(world, "jo@tailspin.example", "blocked behind") is None


def test_a_forged_received_from_a_stranger_is_not_trusted(world: World) -> None:
    # wingtip names the third party without locking down: anyone may deliver, but only the third
    # party's own connections are walked past.
    send_through(world, STRANGER, "hank@wingtip.example", "forged hop")
    send_through(world, THIRD_PARTY, "hank@wingtip.example", "real hop")
    wait_for(lambda: landed(world, "hank@wingtip.example", "forged hop") is not None)
    wait_for(lambda: landed(world, "hank@wingtip.example", "real hop") is not None)
    forged = head_of(landed(world, "hank@wingtip.example", "forged hop") or b"")
    assert f"CIP:{STRANGER};" in forged and "spf=fail" in forged and "SkipListedInternetSender" not in forged
    real = head_of(landed(world, "hank@wingtip.example", "real hop") or b"")
    assert f"CIP:{ORIGINAL};" in real and "spf=pass" in real
    # A stamp the sender wrote itself is removed before anything reads it.
    head = (
        "X-Postroom-ExternalOriginalInternetSender: ip=192.0.2.1\r\n"
        "X-Postroom-SkipListedInternetSender: 192.0.2.1\r\n"
    )
    with smtp(world, STRANGER) as client:
        client.sendmail(
            "news@origin.example",
            ["hank@wingtip.example"],
            message("pre-stamped", "news@origin.example", "hank@wingtip.example", head),
        )
    wait_for(lambda: landed(world, "hank@wingtip.example", "pre-stamped") is not None)
    assert "192.0.2.1" not in head_of(landed(world, "hank@wingtip.example", "pre-stamped") or b"")


def test_trace_names_the_connector_only_to_its_own_tenant(world: World) -> None:
    with smtp(world, THIRD_PARTY) as client:
        client.sendmail(
            "news@origin.example",
            ["dave@northwind.example", "bob@contoso.com"],
            message(
                "traced through the filter", "news@origin.example", "dave@northwind.example", ORIGINAL_HOP
            ),
        )
    [row] = traced(world, "dave@northwind.example", "traced through the filter")
    for tenant, connector in (("northwind", "filter"), ("contoso", None)):
        detail = world.app.trace.detail(row.message_id, TenantScope(world.tenants[tenant]))
        assert detail is not None
        [receive] = [e for e in detail.events if e.event == "Receive"]
        assert receive.detail.get("connector") == connector, tenant
    detail = world.app.trace.detail(row.message_id, TenantScope(world.tenants["northwind"]))
    assert detail is not None
    [receive] = [e for e in detail.events if e.event == "Receive"]
    assert receive.detail["connector_type"] == "partner" and receive.detail["connector_match"] == "ip"


# --- internal mail from on-premises -------------------------------------------------------------------------


def test_mail_from_on_premises_treated_as_internal_skips_anti_spam_and_reaches_internal_groups(
    world: World,
) -> None:
    with smtp(world, STRANGER) as client:
        client.mail("<app@contoso.com>")
        assert said(client.rcpt("staff@contoso.com")).startswith("550 5.7.133")
    with smtp(world, ON_PREM, tls=True) as client:
        answers = relay(
            world,
            client,
            "app@contoso.com",
            ["bob@contoso.com", "staff@contoso.com", "x@elsewhere.example"],
            "internal memo",
        )
    assert answers[1:4] == ["250 2.1.5 Recipient OK"] * 3
    wait_for(lambda: landed(world, "bob@contoso.com", "internal memo") is not None)
    wait_for(lambda: landed(world, "alice@contoso.com", "internal memo") is not None)
    head = head_of(landed(world, "bob@contoso.com", "internal memo") or b"")
    assert "SFV:SKI;" in head and "DIR:INT;" in head and "SCL:-1;" in head
    [row] = traced(world, "bob@contoso.com", "internal memo")
    detail = world.app.trace.detail(row.message_id, TenantScope(world.tenants["contoso"]))
    assert detail is not None
    [receive] = [e for e in detail.events if e.event == "Receive"]
    assert receive.detail["connector"] == "contoso on-premises"
    assert receive.detail["connector_type"] == "on-premises" and receive.detail["connector_match"] == "ip"


# --- internal-relay domains ---------------------------------------------------------------------------------


def test_an_unknown_recipient_of_an_internal_relay_domain(world: World) -> None:
    with smtp(world, STRANGER) as client:
        client.mail("<news@origin.example>")
        by_mx = said(client.rcpt("new.hire@relay.woodgrove.example"))  # MX: woodgrove's own server
        loop = said(client.rcpt("x@loop.woodgrove.example"))  # MX: this service
        failing = said(client.rcpt("x@fail.woodgrove.example"))  # the DNS fails
        connector = said(client.rcpt("someone@relay.contoso.com"))  # contoso's on-premises connector
        client.data(
            message("to on-premises by mx", "news@origin.example", "new.hire@relay.woodgrove.example")
        )
    assert by_mx == connector == "250 2.1.5 Recipient OK"
    assert loop == "550 5.4.1 Recipient address rejected: Access denied"
    assert failing.startswith("451 4.4.3")
    wait_for(lambda: sunk(world, "woodgrove", "to on-premises by mx") is not None)
    found = sunk(world, "woodgrove", "to on-premises by mx")
    assert found is not None and "new.hire@relay.woodgrove.example" in found.recipients
    # From contoso's own on-premises server the unknown recipient would go straight back: refused.
    with smtp(world, ON_PREM, tls=True) as client:
        client.mail("<app@contoso.com>")
        assert (
            said(client.rcpt("someone@relay.contoso.com"))
            == "550 5.4.1 Recipient address rejected: Access denied"
        )


# --- devices ------------------------------------------------------------------------------------------------


def test_direct_send_from_a_device_reaches_internal_recipients_only(world: World) -> None:
    with smtp(world, DEVICE) as client:
        client.mail("<scanner@adventure.example>")
        internal = said(client.rcpt("gina@adventure.example"))
        external = said(client.rcpt("someone@elsewhere.example"))
    assert internal == "250 2.1.5 Recipient OK"
    assert external == "550 5.7.1 Unable to relay"


# --- a removed tenant ---------------------------------------------------------------------------------------


def test_a_removed_tenants_connector_relays_nothing_for_a_new_tenant_with_its_names(world: World) -> None:
    def relay_reply() -> str:
        with smtp(world, GHOST_ON_PREM) as client:
            client.mail("<app@ghost.example>")
            return said(client.rcpt("x@elsewhere.example"))

    assert relay_reply() == "250 2.1.5 Recipient OK"
    app = world.app
    remove_tenant(app.database, app.blobs, app.directory, OPERATOR, "ghost", apply=True)
    reborn = add_tenant(app, "ghost", "ghost.example", "kim@ghost.example")
    assert reborn != world.tenants["ghost"]
    wait_for(lambda: relay_reply() == "550 5.7.1 Unable to relay")


# --- real clients: swaks and Postfix with client certificates -----------------------------------------------

SWAKS = shutil.which("swaks")


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
def test_swaks_with_a_client_certificate_relays_and_one_nobody_trusts_fails_once(world: World) -> None:
    host, port = world.node.mx
    assert SWAKS is not None

    def swaks(source: str, certificate: Issued, subject: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                SWAKS,
                "--server",
                host,
                "--port",
                str(port),
                "--local-interface",
                source,
                "--tls",
                "--tls-cert",
                str(certificate.certificate),
                "--tls-key",
                str(certificate.key),
                "--from",
                "",
                "--to",
                "returned@elsewhere.example",
                "--header",
                f"Subject: {subject}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    trusted = swaks(CERT_CLIENT, world.certificates.contoso, "swaks ndr")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "250 2.1.5 Recipient OK" in trusted.stdout
    wait_for(lambda: sunk(world, "internet", "swaks ndr") is not None)
    # A certificate nobody trusts: the handshake fails, swaks stops before MAIL.
    refused = swaks(UNTRUSTED_CLIENT, world.certificates.stranger, "swaks stranger")
    assert refused.returncode != 0
    assert "MAIL FROM" not in refused.stdout
    # Its retry is not asked for a certificate: TLS works, and without one it relays nothing.
    retry = swaks(UNTRUSTED_CLIENT, world.certificates.stranger, "swaks stranger again")
    assert "MAIL FROM" in retry.stdout and "550 5.7.1 Unable to relay" in retry.stdout


POSTFIX = Path("/usr/sbin/postfix")


@pytest.mark.skipif(not POSTFIX.exists() or os.geteuid() != 0, reason="needs Postfix and root")
def test_postfix_on_premises_relays_ndrs_and_forwards_over_its_certificate(
    world: World, tmp_path: Path
) -> None:
    host, port = world.node.mx
    certificate = world.certificates.contoso
    for path in (certificate.certificate, certificate.key):
        shutil.copy(path, tmp_path / path.name)
    lab = PostfixLab(
        host=POSTFIX_ON_PREM,
        domain="onprem.contoso.com",
        extra={
            "relayhost": f"[{host}]:{port}",
            "smtp_bind_address": POSTFIX_ON_PREM,
            "smtp_tls_security_level": "encrypt",
            "smtp_tls_cert_file": str(tmp_path / certificate.certificate.name),
            "smtp_tls_key_file": str(tmp_path / certificate.key.name),
        },
    )
    with lab:
        with smtplib.SMTP(POSTFIX_ON_PREM, lab.port, timeout=10) as client:
            client.sendmail(
                "", ["returned@elsewhere.example"], message("postfix ndr", "", "returned@elsewhere.example")
            )
            client.sendmail(
                "list@notours.example",
                ["fwd@elsewhere.example"],
                message("postfix forward", "list@notours.example", "fwd@elsewhere.example"),
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            sunk(world, "internet", "postfix ndr") and sunk(world, "internet", "postfix forward")
        ):
            time.sleep(0.1)
        log = lab.log_tail(40)
    ndr, forward = sunk(world, "internet", "postfix ndr"), sunk(world, "internet", "postfix forward")
    assert ndr is not None and forward is not None, log
    assert ndr.sender == "" and forward.sender == "list@notours.example"
    assert b"with ESMTPS" in ndr.content  # Postroom's Received: the relay came over TLS


@pytest.mark.skipif(not POSTFIX.exists() or os.geteuid() != 0, reason="needs Postfix and root")
def test_postfix_with_a_certificate_nobody_trusts_gets_through_on_its_retry(
    world: World, tmp_path: Path
) -> None:
    """The trade-off of asking every client for a certificate (docs/smtp.md): a server presenting one
    the node cannot verify (here a device's, through a Postfix relay with opportunistic TLS) fails the
    handshake; under TLS 1.3 Postfix sees the connection lost during EHLO and defers (4.4.2). Its
    retry is not asked for a certificate and is delivered (direct send to an internal recipient)."""
    host, port = world.node.mx
    certificate = world.certificates.stranger
    for path in (certificate.certificate, certificate.key):
        shutil.copy(path, tmp_path / path.name)
    lab = PostfixLab(
        host=DEVICE,
        domain="printers.adventure.example",
        extra={
            "relayhost": f"[{host}]:{port}",
            "smtp_bind_address": DEVICE,
            "smtp_tls_security_level": "may",
            "smtp_tls_cert_file": str(tmp_path / certificate.certificate.name),
            "smtp_tls_key_file": str(tmp_path / certificate.key.name),
        },
    )
    with lab:
        with smtplib.SMTP(DEVICE, lab.port, timeout=10) as client:
            client.sendmail(
                "scanner@adventure.example",
                ["gina@adventure.example"],
                message("scanned document", "scanner@adventure.example", "gina@adventure.example"),
            )
        wait_for(lambda: "status=deferred" in lab.log_tail(40), timeout=30)
        assert landed(world, "gina@adventure.example", "scanned document") is None
        lab.flush()
        wait_for(lambda: landed(world, "gina@adventure.example", "scanned document") is not None, timeout=30)
        log = lab.log_tail(40)
    assert "lost connection" in log and "status=sent" in log
