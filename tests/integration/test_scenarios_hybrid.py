"""Hybrid 1 and hybrid 2 of spec §4, end to end, with Postfix from the distribution as each
organization's on-premises server (tests/support/onprem.py) and another Postfix as the internet.

- **contoso** (hybrid 1: MX at Postroom, Postroom filters): contoso.test is internal-relay, cloud1 has
  a Postroom mailbox and onprem1 a Maildir on contoso's Postfix (127.0.41.2, certificate
  mail.contoso.test). Configured by `postroom scenario apply hybrid-1` and nothing else, so the
  template is what is under test.
- **tailspin** (hybrid 2: centralized mail transport): tailspin.test, cloud2 in Postroom, onprem2 on
  tailspin's Postfix (127.0.41.3); configured through the directory service, connector by connector.
- The internet: fabrikam.test, whose MTA the tests play from 127.0.41.50 (its SPF names it) and whose
  mailboxes are a catch-all Maildir on 127.0.41.25, found by MX.

What is asserted is what a user sees: where each message landed (a Postroom mailbox, an on-premises
Maildir, the internet's), the headers every hop wrote, the replies a sender got, and message trace.
Connector failures against the real servers: contoso's Postfix stopped (the message waits in
Postroom's queue with 4.4.316 and is delivered once the server is back); **wingtip**'s connectors,
wrong on purpose, meet a certificate of another name (4.7.320) and a server that offers no STARTTLS to
a connector that requires TLS (4.4.317): deferred, and nothing is sent in the clear.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest

from postroom.app import App
from postroom.config import Settings
from postroom.directory import DomainType
from postroom.model.connectors import ConnectorType, OutboundTls
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running
from tests.support.onprem import (
    LabCa,
    LabNet,
    ScenarioPostfix,
    applied_records,
    events,
    exchange,
    header_values,
    inbox,
    internet,
    lab_dns,
    message,
    on_premises,
    postroom_mx,
    publish,
    publish_service,
    scenario_node,
    started,
    traced,
    with_subject,
)

NET = LabNet(41)
CONTOSO_ONPREM, TAILSPIN_ONPREM = NET.at(2), NET.at(3)
CLOUD1, ONPREM1, GONE1, GHOST1 = (f"{u}@contoso.test" for u in ("cloud1", "onprem1", "gone", "ghost"))
CLOUD2, ONPREM2 = "cloud2@tailspin.test", "onprem2@tailspin.test"
CLOUD2_PASSWORD = "cloud2-password-1"
DAVE, ERIN = "dave@fabrikam.test", "erin@fabrikam.test"  # on the internet
SPF_INCLUDE = "include:spf.protection.postroom.test"
HYBRID_1 = [  # the template, by the command an administrator types
    "scenario",
    "apply",
    "hybrid-1",
    "--tenant",
    "contoso",
    "--on-premises-host",
    "mail.contoso.test",
    "--on-premises-ip",
    CONTOSO_ONPREM,
    "--on-premises-certificate-name",
    "*.contoso.test",
    "--json",
]


@dataclass
class World:
    settings: Settings
    node: RunningNode
    dns: DnsTestServer
    internet: ScenarioPostfix
    contoso: ScenarioPostfix  # contoso's on-premises server
    tailspin: ScenarioPostfix
    applied: dict[str, dict[str, str]]  # domain -> the records `scenario apply hybrid-1` says to publish

    @property
    def app(self) -> App:
        return self.node.app


def configure(settings: Settings) -> dict[str, dict[str, str]]:
    """The organizations in the directory, then hybrid-1 by its template; returns the records it says
    to publish."""
    app = App.open(settings)
    try:
        d = app.directory
        d.add_tenant(OPERATOR, "contoso")
        d.add_domain(OPERATOR, "contoso.test", "contoso", verified=True)
        d.add_mailbox(OPERATOR, CLOUD1)
        d.add_tenant(OPERATOR, "tailspin")
        d.add_domain(OPERATOR, "tailspin.test", "tailspin", verified=True)
        d.add_mailbox(OPERATOR, CLOUD2, password=CLOUD2_PASSWORD)
        d.add_inbound_connector(
            OPERATOR,
            "tailspin",
            "from-tailspin-on-premises",
            ConnectorType.ON_PREMISES,
            sender_domains=("*",),
            sender_ips=(TAILSPIN_ONPREM,),
            tls_certificate_name="*.tailspin.test",
            require_tls=True,
            treat_messages_as_internal=True,
        )
        d.add_outbound_connector(
            OPERATOR,
            "tailspin",
            "to-tailspin-on-premises",
            ConnectorType.ON_PREMISES,
            recipient_domains=("tailspin.test",),
            smart_hosts=("mail.tailspin.test",),
            tls=OutboundTls.DOMAIN_VALIDATION,
            tls_domain="mail.tailspin.test",
            route_all_via_on_premises=True,
        )
        d.set_domain_type(OPERATOR, "tailspin.test", DomainType.INTERNAL_RELAY)
        # wingtip's connectors are wrong on purpose: one names a certificate contoso's server does not
        # have, the other wants TLS from a server (the internet's) that does not offer it.
        d.add_tenant(OPERATOR, "wingtip")
        for domain, host, tls, name in (
            ("wingtip.test", CONTOSO_ONPREM, OutboundTls.DOMAIN_VALIDATION, "mail.wingtip.test"),
            ("plain.wingtip.test", NET.internet, OutboundTls.ENCRYPTION_ONLY, ""),
        ):
            d.add_domain(OPERATOR, domain, "wingtip", DomainType.INTERNAL_RELAY, verified=True)
            d.add_outbound_connector(
                OPERATOR,
                "wingtip",
                f"to-{domain}",
                ConnectorType.ON_PREMISES,
                recipient_domains=(domain,),
                smart_hosts=(host,),
                tls=tls,
                tls_domain=name,
            )
    finally:
        app.close()
    applied = postroom(*HYBRID_1, config=settings.source)
    assert applied.returncode == 0, applied.stderr + applied.stdout
    return applied_records(json.loads(applied.stdout))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ca = LabCa(tmp_path_factory.mktemp("ca"))
    settings = scenario_node(tmp_path_factory.mktemp("hybrid") / "node", NET, ca)
    world_ = internet(NET, ["fabrikam.test"])
    contoso = on_premises(NET, 2, "contoso.test", [ONPREM1], ca, bounces=[GONE1])
    tailspin = on_premises(NET, 3, "tailspin.test", [ONPREM2], ca)
    with (
        lab_dns(NET) as dns,
        started(world_, contoso, tailspin, meanwhile=partial(configure, settings)) as applied,
        running(settings) as node,
    ):
        assert applied is not None
        publish_service(dns, settings, NET)
        publish(
            dns,
            "fabrikam.test",
            mx="mx.fabrikam.test",
            spf=f"v=spf1 ip4:{NET.internet_client} -all",
            hosts={"mx": NET.internet},
        )
        # contoso publishes what its scenario said to; tailspin what an administrator would.
        contoso_records = applied["contoso.test"]
        publish(
            dns,
            "contoso.test",
            mx=contoso_records["MX"],
            spf=contoso_records["TXT"],
            hosts={"mail": CONTOSO_ONPREM},
        )
        tailspin_spf = f"v=spf1 ip4:{TAILSPIN_ONPREM} {SPF_INCLUDE} -all"
        publish(
            dns,
            "tailspin.test",
            mx=postroom_mx(node.app, "tailspin.test"),
            spf=tailspin_spf,
            hosts={"mail": TAILSPIN_ONPREM},
        )
        yield World(settings, node, dns, world_, contoso, tailspin, applied)


def from_the_internet(world: World, recipient: str, subject: str, sender: str = DAVE) -> str:
    """Send as fabrikam's MTA to Postroom's MX; the message's id from `250 ... Queued as <id>`."""
    sent = exchange(
        world.node.mx,
        sender,
        [recipient],
        message(sender, recipient, subject),
        source=NET.internet_client,
        helo="mta.fabrikam.test",
    )
    assert sent.data is not None and sent.data.code == 250, sent
    return sent.data.text.rsplit(" ", 1)[-1]


def through_on_premises(onprem: ScenarioPostfix, sender: str, recipient: str, subject: str) -> None:
    """Hand a message to an on-premises server, as its users' mail client (or an MTA it relays for)."""
    sent = exchange(onprem.host, sender, [recipient], message(sender, recipient, subject), helo="client.lan")
    assert sent.data is not None and sent.data.code == 250, sent


# --- the template ------------------------------------------------------------------------------------


def test_hybrid1_apply_prints_the_records_to_publish_and_makes_the_domain_internal_relay(
    world: World,
) -> None:
    assert world.applied == {
        "contoso.test": {
            "MX": postroom_mx(world.app, "contoso.test"),
            "TXT": f"v=spf1 ip4:{CONTOSO_ONPREM} {SPF_INCLUDE} -all",
        }
    }
    d = world.app.directory
    assert d.get_domain(OPERATOR, "contoso.test").type is DomainType.INTERNAL_RELAY
    [inbound] = d.inbound_connectors(OPERATOR, "contoso")
    [outbound] = d.outbound_connectors(OPERATOR, "contoso")
    assert (inbound.type, inbound.tls_certificate_name) == (ConnectorType.ON_PREMISES, "*.contoso.test")
    assert (outbound.type, outbound.smart_hosts) == (ConnectorType.ON_PREMISES, ("mail.contoso.test",))


# --- hybrid 1 ----------------------------------------------------------------------------------------


def test_hybrid1_internet_mail_for_a_cloud_mailbox_is_delivered_in_postroom(world: World) -> None:
    from_the_internet(world, CLOUD1, "h1 to the cloud")
    wait_for(lambda: with_subject(inbox(world.app, CLOUD1), "h1 to the cloud"), timeout=30)
    [got] = with_subject(inbox(world.app, CLOUD1), "h1 to the cloud")
    assert any("spf=pass" in v for v in header_values(got, "Authentication-Results"))


def test_hybrid1_internet_mail_for_an_on_premises_mailbox_goes_over_the_outbound_connector(
    world: World,
) -> None:
    message_id = from_the_internet(world, ONPREM1, "h1 to on-premises")
    [got] = world.contoso.wait_for(ONPREM1, containing="Subject: h1 to on-premises")
    onprem_hop, postroom_hop = header_values(got, "Received")[:2]
    # contoso's Postfix took it from Postroom over TLS (the connector validates mail.contoso.test).
    assert "by mail.contoso.test (Postfix)" in onprem_hop and "using TLS" in onprem_hop
    assert f"[{NET.internet_client}]" in postroom_hop and "by mx.postroom.test" in postroom_hop
    assert any("spf=pass" in v for v in header_values(got, "Authentication-Results"))  # Postroom filtered
    wait_for(lambda: any(e.event == "Send" for e in events(world.app, message_id)), timeout=30)
    assert any(
        e.detail.get("connector") == "hybrid-1-on-premises-outbound" for e in events(world.app, message_id)
    )


def test_hybrid1_on_premises_users_send_to_the_internet_through_postroom(world: World) -> None:
    through_on_premises(world.contoso, ONPREM1, DAVE, "h1 on-premises outbound")
    [got] = world.internet.wait_for(DAVE, containing="Subject: h1 on-premises outbound")
    internet_hop, postroom_hop, onprem_hop = header_values(got, "Received")[:3]
    assert "by mx.internet.test (Postfix)" in internet_hop and "from mx.postroom.test" in internet_hop
    assert "from mail.contoso.test" in postroom_hop and CONTOSO_ONPREM in postroom_hop
    assert "by mail.contoso.test (Postfix)" in onprem_hop
    [row] = traced(world.app, DAVE, "h1 on-premises outbound")
    receive = next(e for e in events(world.app, row.message_id) if e.event == "Receive")
    assert receive.detail.get("connector") == "hybrid-1-on-premises-inbound"


def test_hybrid1_an_on_premises_ndr_is_relayed_out_over_the_certificate_connector(world: World) -> None:
    through_on_premises(world.contoso, ERIN, GONE1, "h1 to a gone user")  # erin writes from outside
    [ndr] = world.internet.wait_for(ERIN, containing=b"h1 to a gone user")
    assert header_values(ndr, "Return-Path") == ["<>"]
    assert b"MAILER-DAEMON@mail.contoso.test" in ndr and GONE1.encode() in ndr
    assert any("from mail.contoso.test" in v for v in header_values(ndr, "Received"))


def test_hybrid1_a_recipient_neither_side_knows_is_refused_on_the_way_back_and_the_sender_told(
    world: World,
) -> None:
    message_id = from_the_internet(world, GHOST1, "h1 to a ghost", sender=ERIN)
    ndr = next(
        m
        for m in world.internet.wait_for(ERIN, containing=b"h1 to a ghost")
        if m.startswith(b"Return-Path: <>")
    )
    # Postroom sent it to on-premises once (InternalRelay); on-premises sent it back; Postroom refused it
    # (the loop guard) and on-premises bounced it to the sender: no second trip.
    assert b"5.4.1" in ndr and GHOST1.encode() in ndr and b"MAILER-DAEMON@mail.contoso.test" in ndr
    sends = [e for e in events(world.app, message_id) if e.event == "Send"]
    assert len(sends) == 1
    refused = [line for line in world.contoso.log().splitlines() if f"to=<{GHOST1}>" in line]
    assert sum("status=bounced" in line and "5.4.1" in line for line in refused) == 1
    assert not any("status=sent" in line for line in refused)


def test_hybrid1_relay_from_an_address_no_connector_names_is_refused(world: World) -> None:
    cases = {
        ONPREM1: "5.7.64",  # the tenant's domain, from a server that is not its on-premises (drift)
        "spam@evil.test": "5.7.1",  # nobody's
    }
    for sender, code in cases.items():
        tried = exchange(world.node.mx, sender, [DAVE], source=NET.attacker, helo="mail.contoso.test")
        assert tried.mail.code == 250
        for recipient, reply in tried.rcpt.items():
            assert (reply.code, reply.enhanced) == (550, code), (sender, recipient, reply)
    assert not any(b"evil.test" in m for m in world.internet.messages(DAVE))


# --- hybrid 2 ------------------------------------------------------------------------------------------


def test_hybrid2_internet_mail_goes_through_on_premises_and_reaches_the_cloud_mailbox_once(
    world: World,
) -> None:
    from_the_internet(world, CLOUD2, "h2 inbound via on-premises")
    wait_for(lambda: with_subject(inbox(world.app, CLOUD2), "h2 inbound via on-premises"), timeout=30)
    wait_for(lambda: world.tailspin.queue_size() == 0, timeout=30)
    wait_for(
        lambda: all(
            r.status is not TraceStatus.PENDING
            for r in traced(world.app, CLOUD2, "h2 inbound via on-premises")
        ),
        timeout=30,
    )
    [got] = with_subject(inbox(world.app, CLOUD2), "h2 inbound via on-premises")
    received = header_values(got, "Received")
    assert "from mail.tailspin.test" in received[0] and TAILSPIN_ONPREM in received[0]
    assert "by mail.tailspin.test (Postfix)" in received[1]
    assert any(f"[{NET.internet_client}]" in hop for hop in received[2:])
    rows = traced(world.app, CLOUD2, "h2 inbound via on-premises")
    assert len(rows) == 2  # once into Postroom from the internet, once back from on-premises
    first = min(rows, key=lambda r: r.received_at)
    assert any(
        e.detail.get("connector") == "to-tailspin-on-premises" for e in events(world.app, first.message_id)
    )


def test_hybrid2_a_cloud_users_mail_to_the_internet_goes_through_on_premises(world: World) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(*world.node.address("submission"), timeout=30) as client:
        client.starttls(context=context)
        client.login(CLOUD2, CLOUD2_PASSWORD)
        assert client.sendmail(CLOUD2, [DAVE], message(CLOUD2, DAVE, "h2 outbound via on-premises")) == {}
    [got] = world.internet.wait_for(DAVE, containing="Subject: h2 outbound via on-premises")
    received = header_values(got, "Received")
    assert "from mx.postroom.test" in received[0]
    assert "from mail.tailspin.test" in received[1] and TAILSPIN_ONPREM in received[1]
    assert "by mail.tailspin.test (Postfix)" in received[2]


# --- a connector failure -------------------------------------------------------------------------------


def test_on_premises_down_the_message_waits_with_4_4_316_and_is_delivered_when_it_is_back(
    world: World,
) -> None:
    world.contoso.halt()
    try:
        message_id = from_the_internet(world, ONPREM1, "h1 while on-premises is down")
        wait_for(lambda: any(e.event == "Defer" for e in events(world.app, message_id)), timeout=30)
        [defer] = [e for e in events(world.app, message_id) if e.event == "Defer"]
        assert "4.4.316" in str(defer.detail.get("reply")), defer.detail
    finally:
        world.contoso.resume()
    assert world.app.queue.retry(OPERATOR, message_id) == 1  # what `postroom queue retry` does
    assert world.contoso.wait_for(ONPREM1, containing="Subject: h1 while on-premises is down")
    wait_for(lambda: any(e.event == "Send" for e in events(world.app, message_id)), timeout=30)


@pytest.mark.parametrize(
    ("recipient", "code"),
    [
        ("someone@wingtip.test", "4.7.320"),  # the certificate is mail.contoso.test, not mail.wingtip.test
        ("someone@plain.wingtip.test", "4.4.317"),  # TLS required, STARTTLS not offered
    ],
)
def test_a_connector_whose_tls_cannot_be_met_defers_and_never_sends_in_the_clear(
    world: World, recipient: str, code: str
) -> None:
    message_id = from_the_internet(world, recipient, f"wt to {recipient}")
    wait_for(lambda: any(e.event == "Defer" for e in events(world.app, message_id)), timeout=30)
    [defer] = [e for e in events(world.app, message_id) if e.event == "Defer"]
    assert code in str(defer.detail.get("reply")), defer.detail
    assert not [e for e in events(world.app, message_id) if e.event == "Send"]
    assert "wingtip" not in world.internet.log() and f"to=<{recipient}>" not in world.contoso.log()
