"""Hybrid 3, hybrid 4 and filtering only (spec §4), end to end, with Postfix from the distribution as
each organization's on-premises server (tests/support/onprem.py) and another Postfix as the internet.

- **litware** (hybrid 3: MX at on-premises): litware.test's MX is litware's Postfix (127.0.42.2), which
  hosts onprem3 and sends the rest of the domain (cloud3, in Postroom) on to Postroom. Applied by
  `postroom scenario apply hybrid-3`: a Partner connector locks the tenant's inbound mail to the
  on-premises address, so mail that skips the MX is refused.
- **woodgrove** (hybrid 4: MX at on-premises, outbound via Postroom): woodgrove's Postfix
  (127.0.42.3, certificate mail.woodgrove.test) relays all its outbound mail through Postroom over a
  certificate-based OnPremises connector (`scenario apply hybrid-4`): its users' mail, its NDRs and
  mail it forwards for other domains. Every relay trick is tried from an address no connector names,
  with and without a client certificate, and nothing may reach the internet.
- **adatum** (filtering only, EOP standalone): no mailbox in Postroom; adatum.test's MX is Postroom,
  which filters and relays to adatum's Postfix (127.0.42.5, known by IP), and relays its outbound mail.
- The internet: fabrikam.test (MTA on 127.0.42.50, or on the machine's public address where enhanced
  filtering must find the original sender; mailboxes a catch-all Maildir on 127.0.42.25).
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from postroom.app import App
from postroom.app.scenarios import apply_scenario
from postroom.app.setup import write_self_signed
from postroom.config import Settings
from postroom.directory import DirectoryError, DomainType
from postroom.directory.scenarios import ScenarioParameters
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running
from tests.support.onprem import (
    CertificatePair,
    Exchange,
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
    public_client,
    publish,
    publish_service,
    scenario_node,
    started,
    traced,
    with_subject,
)

NET = LabNet(42)
LITWARE_ONPREM, WOODGROVE_ONPREM, ADATUM_ONPREM = NET.at(2), NET.at(3), NET.at(5)
CLOUD3, ONPREM3 = "cloud3@litware.test", "onprem3@litware.test"
CLOUD3_PASSWORD = "cloud3-password-1"
ONPREM4, GONE4 = "onprem4@woodgrove.test", "gone@woodgrove.test"
USER5 = "user5@adatum.test"
DAVE, ERIN, FRANK = "dave@fabrikam.test", "erin@fabrikam.test", "frank@fabrikam.test"
SPF_INCLUDE = "include:spf.protection.postroom.test"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PUBLIC = public_client()
INTERNET_MTA = PUBLIC or NET.internet_client  # where enhanced filtering can find it, when the machine can


@dataclass
class World:
    settings: Settings
    node: RunningNode
    dns: DnsTestServer
    ca: LabCa
    internet: ScenarioPostfix
    litware: ScenarioPostfix
    woodgrove: ScenarioPostfix
    adatum: ScenarioPostfix
    applied: dict[str, dict[str, dict[str, str]]]  # scenario -> domain -> the records apply says to publish

    @property
    def app(self) -> App:
        return self.node.app


# hybrid-3 and hybrid-4 are applied in the process (the function the CLI calls: a CLI process costs
# about 2 s of CPU); filtering-only by the command itself.
IN_PROCESS = {
    "hybrid-3": (
        "litware",
        ScenarioParameters(on_premises_host="mail.litware.test", on_premises_ips=(LITWARE_ONPREM,)),
    ),
    "hybrid-4": (
        "woodgrove",
        ScenarioParameters(
            on_premises_host="mail.woodgrove.test", on_premises_certificate_name="*.woodgrove.test"
        ),
    ),
}
FILTERING_ONLY = [
    "scenario",
    "apply",
    "filtering-only",
    "--tenant",
    "adatum",
    "--on-premises-host",
    "mail.adatum.test",
    "--on-premises-ip",
    ADATUM_ONPREM,
    "--json",
]


def configure(settings: Settings) -> dict[str, dict[str, dict[str, str]]]:
    """The tenants, then each scenario by its template; per scenario, the records it says to publish."""
    app = App.open(settings)
    applied = {}
    try:
        d = app.directory
        for tenant in ("litware", "woodgrove", "adatum"):
            d.add_tenant(OPERATOR, tenant)
            d.add_domain(OPERATOR, f"{tenant}.test", tenant, verified=True)
        d.add_mailbox(OPERATOR, CLOUD3, password=CLOUD3_PASSWORD)
        for scenario, (tenant, parameters) in IN_PROCESS.items():
            done = apply_scenario(d, settings.service, OPERATOR, tenant, scenario, parameters)
            applied[scenario] = applied_records(done.as_json())
    finally:
        app.close()
    command = postroom(*FILTERING_ONLY, config=settings.source)
    assert command.returncode == 0, command.stderr + command.stdout
    applied["filtering-only"] = applied_records(json.loads(command.stdout))
    return applied


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ca = LabCa(tmp_path_factory.mktemp("ca"))
    settings = scenario_node(tmp_path_factory.mktemp("onprem-mx") / "node", NET, ca)
    world_ = internet(NET, ["fabrikam.test"])
    litware = on_premises(NET, 2, "litware.test", [ONPREM3], ca, client_tls="may")
    woodgrove = on_premises(NET, 3, "woodgrove.test", [ONPREM4], ca, bounces=[GONE4])
    adatum = on_premises(NET, 5, "adatum.test", [USER5], ca, bounces=["gone@adatum.test"], client_tls="may")
    with (
        lab_dns(NET) as dns,
        started(world_, litware, woodgrove, adatum, meanwhile=partial(configure, settings)) as applied,
        running(settings) as node,
    ):
        assert applied is not None
        publish_service(dns, settings, NET)
        fabrikam = " ".join(f"ip4:{a}" for a in dict.fromkeys([NET.internet_client, INTERNET_MTA]))
        publish(
            dns,
            "fabrikam.test",
            mx="mx.fabrikam.test",
            spf=f"v=spf1 {fabrikam} -all",
            hosts={"mx": NET.internet},
        )
        # Each organization publishes what its scenario said to (hybrid-4's SPF names no address: its
        # server is known by certificate; nothing here checks SPF on its outbound mail but Postroom).
        for scenario, domain, host in (
            ("hybrid-3", "litware.test", LITWARE_ONPREM),
            ("hybrid-4", "woodgrove.test", WOODGROVE_ONPREM),
            ("filtering-only", "adatum.test", ADATUM_ONPREM),
        ):
            records = applied[scenario][domain]
            publish(dns, domain, mx=records["MX"], spf=records["TXT"], hosts={"mail": host})
        yield World(settings, node, dns, ca, world_, litware, woodgrove, adatum, applied)


def hand_to(host: str, sender: str, recipient: str, subject: str, *, source: str | None = None) -> None:
    """Give a message to a server (an on-premises one as its users' client, or as an internet MTA)."""
    sent = exchange(host, sender, [recipient], message(sender, recipient, subject), source=source)
    assert sent.data is not None and sent.data.code == 250, sent


def settled(world: World, recipient: str, subject: str) -> list[TraceStatus]:
    """The trace statuses of the messages to `recipient` with `subject`, once none is pending."""
    rows: list[TraceStatus] = []

    def done() -> bool:
        rows[:] = [r.status for r in traced(world.app, recipient, subject)]
        return bool(rows) and TraceStatus.PENDING not in rows

    wait_for(done, timeout=30)
    return rows


# --- hybrid 3: MX at on-premises ---------------------------------------------------------------------


def test_hybrid3_apply_puts_the_mx_at_on_premises_and_locks_the_tenant_to_it(world: World) -> None:
    assert world.applied["hybrid-3"] == {
        "litware.test": {"MX": "mail.litware.test", "TXT": f"v=spf1 ip4:{LITWARE_ONPREM} {SPF_INCLUDE} -all"}
    }
    d = world.app.directory
    assert d.get_domain(OPERATOR, "litware.test").type is DomainType.INTERNAL_RELAY
    [partner] = d.inbound_connectors(OPERATOR, "litware")
    assert partner.restrict_domains_to_ips and partner.sender_ips == (LITWARE_ONPREM,)


def test_hybrid3_internet_mail_arrives_through_on_premises_in_the_cloud_mailbox(world: World) -> None:
    hand_to(world.litware.host, DAVE, CLOUD3, "h3 via the on-premises MX", source=INTERNET_MTA)
    wait_for(lambda: with_subject(inbox(world.app, CLOUD3), "h3 via the on-premises MX"), timeout=30)
    [got] = with_subject(inbox(world.app, CLOUD3), "h3 via the on-premises MX")
    postroom_hop, onprem_hop = header_values(got, "Received")[:2]
    assert "from mail.litware.test" in postroom_hop and LITWARE_ONPREM in postroom_hop
    assert f"[{INTERNET_MTA}]" in onprem_hop and "by mail.litware.test (Postfix)" in onprem_hop
    if PUBLIC:  # enhanced filtering skipped the on-premises hop: SPF judged the internet MTA
        assert any("spf=pass" in v for v in header_values(got, "Authentication-Results"))


def test_hybrid3_mail_that_skips_the_mx_is_refused(world: World) -> None:
    tried = exchange(world.node.mx, DAVE, [CLOUD3, "someone@litware.test"], source=NET.internet_client)
    for reply in tried.rcpt.values():
        assert (reply.code, reply.enhanced) == (550, "5.7.51"), tried


def test_hybrid3_a_cloud_users_mail_for_an_on_premises_user_goes_over_the_outbound_connector(
    world: World,
) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(*world.node.address("submission"), timeout=30) as client:
        client.starttls(context=context)
        client.login(CLOUD3, CLOUD3_PASSWORD)
        assert client.sendmail(CLOUD3, [ONPREM3], message(CLOUD3, ONPREM3, "h3 cloud to on-premises")) == {}
    [got] = world.litware.wait_for(ONPREM3, containing="Subject: h3 cloud to on-premises")
    assert "from mx.postroom.test" in header_values(got, "Received")[0]


# --- hybrid 4: MX at on-premises, outbound via Postroom ----------------------------------------------


def test_hybrid4_on_premises_users_send_to_the_internet_over_the_certificate_connector(world: World) -> None:
    hand_to(world.woodgrove.host, ONPREM4, DAVE, "h4 outbound")
    [got] = world.internet.wait_for(DAVE, containing="Subject: h4 outbound")
    internet_hop, postroom_hop = header_values(got, "Received")[:2]
    assert "from mx.postroom.test" in internet_hop
    assert "from mail.woodgrove.test" in postroom_hop and WOODGROVE_ONPREM in postroom_hop
    [row] = traced(world.app, DAVE, "h4 outbound")
    receive = next(e for e in events(world.app, row.message_id) if e.event == "Receive")
    assert receive.detail.get("connector") == "hybrid-4-on-premises-inbound"


def test_hybrid4_mail_on_premises_forwards_for_another_domain_is_relayed(world: World) -> None:
    hand_to(world.woodgrove.host, ERIN, FRANK, "h4 forwarded by on-premises")  # a sender not woodgrove's
    [got] = world.internet.wait_for(FRANK, containing="Subject: h4 forwarded by on-premises")
    assert header_values(got, "Return-Path") == [f"<{ERIN}>"]


def test_hybrid4_an_on_premises_ndr_is_relayed_to_the_sender(world: World) -> None:
    hand_to(world.woodgrove.host, ERIN, GONE4, "h4 to a gone user")
    ndr = next(
        m
        for m in world.internet.wait_for(ERIN, containing=b"h4 to a gone user")
        if m.startswith(b"Return-Path: <>")
    )
    assert b"MAILER-DAEMON@mail.woodgrove.test" in ndr and GONE4.encode() in ndr


RELAY_TRICKS = [
    "dave@fabrikam.test",
    "DAVE@FABRIKAM.TEST",
    "dave@fabrikam.test.",
    "@woodgrove.test:dave@fabrikam.test",  # a source route through the tenant's domain
    "dave%fabrikam.test@woodgrove.test",  # the percent hack, in the tenant's internal-relay domain
    '"dave@fabrikam.test"@woodgrove.test',
    "dave@[127.0.42.25]",  # the internet's address literal
    "dave@xn--fabrkam-m2a.test",  # an IDN nobody hosts
    CLOUD3,  # another tenant's mailbox, locked to litware's on-premises server
]


def attempt(
    world: World, sender: str, subject: str, certificate: CertificatePair | None = None
) -> Exchange | None:
    """Every relay trick from the attacker's address (127.0.42.66), in one transaction; None when the
    node refused the TLS handshake (a certificate that does not verify: nothing was offered)."""
    try:
        return exchange(
            world.node.mx,
            sender,
            RELAY_TRICKS,
            message(sender, DAVE, subject),
            source=NET.attacker,
            helo="mail.woodgrove.test",
            certificate=certificate,
        )
    except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionResetError):
        if certificate is None:
            raise
        return None


@pytest.mark.parametrize(
    ("sender", "certificate"),
    [
        (ONPREM4, None),  # the tenant's own domain from an address its connector does not name
        ("spam@evil.test", None),
        ("", None),  # the null sender: an NDR that is no on-premises NDR
        (ONPREM4, "self-signed"),  # claims mail.woodgrove.test in a certificate no trusted CA signed
        (ONPREM4, "other-name"),  # a certificate the lab CA signed, for a name that is not woodgrove's
    ],
)
def test_hybrid4_no_relay_trick_from_an_unattributed_client_reaches_the_internet(
    world: World, sender: str, certificate: str | None, tmp_path: Path
) -> None:
    pair = None
    if certificate == "self-signed":
        pair = CertificatePair(tmp_path / "c.pem", tmp_path / "c.key", ("mail.woodgrove.test",))
        write_self_signed(pair.certificate, pair.key, ["mail.woodgrove.test"])
    elif certificate == "other-name":
        pair = world.ca.issue("mail.evil.test")
    subject = f"relay trick {sender or 'null'} {certificate}"
    tried = attempt(world, sender, subject, pair)
    if tried is None:
        assert certificate == "self-signed", "a certificate the lab CA signed is verified: TLS goes on"
        return
    external = {r: reply for r, reply in tried.rcpt.items() if "woodgrove.test" not in r.rpartition("@")[2]}
    for recipient, reply in external.items():
        assert reply.code >= 500, (recipient, reply)
    if sender == ONPREM4 and certificate is None:
        assert (tried.rcpt[DAVE].code, tried.rcpt[DAVE].enhanced) == (550, "5.7.64")
    if sender == "spam@evil.test":
        assert (tried.rcpt[DAVE].code, tried.rcpt[DAVE].enhanced) == (550, "5.7.1")
    # What was accepted (addresses of woodgrove's internal-relay domain) went to woodgrove's server, came
    # back (it hosts none of them) and was refused there: it never reaches fabrikam's mailboxes.
    if tried.accepted:
        settled(world, tried.accepted[0], subject)  # Postroom handed them to woodgrove's server
        wait_for(lambda: world.woodgrove.queue_size() == 0, timeout=30)  # which is done with them
    assert not [m for m in world.internet.messages(DAVE) if subject.encode() in m]


# --- filtering only (EOP standalone) -------------------------------------------------------------------


def test_filtering_only_internet_mail_is_filtered_then_relayed_to_on_premises(world: World) -> None:
    assert world.applied["filtering-only"] == {
        "adatum.test": {
            "MX": postroom_mx(world.app, "adatum.test"),
            "TXT": f"v=spf1 ip4:{ADATUM_ONPREM} {SPF_INCLUDE} -all",
        }
    }
    with pytest.raises(DirectoryError):  # no mailbox in Postroom
        world.app.directory.get_recipient(OPERATOR, USER5)
    hand_to(world.node.mx[0], DAVE, USER5, "fo inbound", source=NET.internet_client)
    [got] = world.adatum.wait_for(USER5, containing="Subject: fo inbound")
    assert any("spf=pass" in v for v in header_values(got, "Authentication-Results"))
    [report] = header_values(got, "X-Postroom-Antispam-Report")
    assert "SFV:NSPM" in report
    assert "by mail.adatum.test (Postfix)" in header_values(got, "Received")[0]


def test_filtering_only_spam_is_relayed_marked_for_on_premises_to_file_as_junk(world: World) -> None:
    """High-confidence spam's action is Junk; a copy for a server that is not Postroom keeps its subject
    and carries the verdict in its headers (SCL 9), which the on-premises server files by, as with
    EOP standalone."""
    spam = message(DAVE, USER5, "fo spam", body=f"Buy now.\n{GTUBE}\n")
    sent = exchange(world.node.mx, DAVE, [USER5], spam, source=NET.internet_client)
    assert sent.data is not None and sent.data.code == 250, sent
    [got] = world.adatum.wait_for(USER5, containing="Subject: fo spam")
    [report] = header_values(got, "X-Postroom-Antispam-Report")
    assert "SCL:9;" in report and "CAT:HSPM;" in report


def test_filtering_only_on_premises_outbound_is_relayed_to_the_internet(world: World) -> None:
    hand_to(world.adatum.host, USER5, DAVE, "fo outbound")
    [got] = world.internet.wait_for(DAVE, containing="Subject: fo outbound")
    assert "from mail.adatum.test" in header_values(got, "Received")[1]


def test_filtering_only_an_ndr_needs_a_certificate_connector(world: World) -> None:
    """adatum's connector knows its server by IP only: its NDRs (the null sender) are refused with
    5.7.64 ATTR36 (spec §3.6 (b)), and stay with the on-premises server."""
    hand_to(world.adatum.host, ERIN, "gone@adatum.test", "fo to a gone user")

    def refused() -> bool:
        return any("said: 550 5.7.64" in line for line in world.adatum.log().splitlines())

    wait_for(refused, timeout=30)
    assert not [m for m in world.internet.messages(ERIN) if b"fo to a gone user" in m]
