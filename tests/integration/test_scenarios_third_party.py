"""Third-party filtering in front, third party with hybrid, devices, and the unsupported row (spec §4,
§5), end to end with Postfix from the distribution as the third-party filtering service, an
organization's on-premises server and the internet (tests/support/onprem.py).

- The third party (127.0.43.4, filter.thirdparty.test) is the MX of fourthcoffee.test, proseware.test
  and relecloud.test and relays their mail to Postroom under its own Received header.
- **fourthcoffee** (scenario 1, `scenario apply third-party-filtering`): a Partner connector for `*`
  locked to the third party's address, with enhanced filtering: SPF judges the original internet
  sender, not the third party. **proseware**: the same lock-down without enhanced filtering (through
  the directory service): SPF judges the third party's address and fails, as documented.
- **relecloud** (third party with hybrid, `scenario apply third-party-hybrid`): the lock-down plus
  relecloud's Postfix (127.0.43.2, certificate mail.relecloud.test) as the on-premises server.
- **northwind** (devices, `scenario apply devices`): a hosted tenant whose printer (127.0.43.60) sends
  straight to the MX (direct send) and whose application (127.0.43.61) relays through an OnPremises
  connector by IP (SMTP relay); ann also submits with SMTP AUTH. **tailwind**, hosted with no
  connector, has a printer on direct send too.
- `scenario apply third-party-no-filtering` is refused with its reason.

The internet's MTA sends from the machine's public address where the test needs enhanced filtering to
find it (a loopback address is the gateway's own network to enhanced filtering, and skipped), else from
127.0.43.50; fabrikam.test's SPF names both. Its mailboxes are a catch-all Maildir on 127.0.43.25.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest

from postroom.app import App
from postroom.app.scenarios import apply_scenario
from postroom.app.tenants import remove_tenant
from postroom.config import Settings
from postroom.directory import DomainType
from postroom.directory.scenarios import ScenarioParameters
from postroom.model.connectors import ConnectorType
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.conftest import wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running
from tests.support.onprem import (
    LabCa,
    LabNet,
    Reply,
    ScenarioPostfix,
    applied_records,
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
    third_party,
    with_subject,
)

NET = LabNet(43)
RELECLOUD_ONPREM = NET.at(2)
FOURTHCOFFEE, PROSEWARE = "fc@fourthcoffee.test", "pw@proseware.test"
RC_CLOUD, RC_ONPREM, RC_PASSWORD = "rc1@relecloud.test", "rcop@relecloud.test", "rc1-password-1"
ANN, ANN_PASSWORD = "ann@northwind.test", "ann-password-1"
TIM = "tim@tailwind.test"  # a hosted tenant with no connector at all
OLDCO_SERVER = NET.at(62)  # oldco's server, named by oldco's relay connector until oldco is removed
DAVE = "dave@fabrikam.test"
SPF_INCLUDE = "include:spf.protection.postroom.test"
PUBLIC = public_client()
CUSTOMERS = ("fourthcoffee.test", "proseware.test", "relecloud.test")
# Applied in the process, by the function `postroom scenario apply` calls (a CLI process costs about
# 2 s of CPU); the unsupported row goes through the command itself.
THIRD_PARTY = {"third_party_host": "filter.thirdparty.test", "third_party_ips": (NET.third_party,)}
APPLY: dict[str, tuple[str, ScenarioParameters]] = {
    "third-party-filtering": ("fourthcoffee", ScenarioParameters(**THIRD_PARTY)),
    "third-party-hybrid": (
        "relecloud",
        ScenarioParameters(
            **THIRD_PARTY,
            on_premises_host="mail.relecloud.test",
            on_premises_ips=(RELECLOUD_ONPREM,),
            on_premises_certificate_name="*.relecloud.test",
        ),
    ),
    "devices": ("northwind", ScenarioParameters(device_ips=(NET.application,))),
}


@dataclass
class World:
    settings: Settings
    node: RunningNode
    dns: DnsTestServer
    internet: ScenarioPostfix
    filter: ScenarioPostfix
    relecloud: ScenarioPostfix
    applied: dict[str, dict[str, dict[str, str]]]  # scenario -> domain -> the records apply says to publish

    @property
    def app(self) -> App:
        return self.node.app


def configure(settings: Settings) -> dict[str, dict[str, dict[str, str]]]:
    app = App.open(settings)
    try:
        d = app.directory
        for tenant in ("fourthcoffee", "proseware", "relecloud", "northwind", "tailwind", "oldco"):
            d.add_tenant(OPERATOR, tenant)
            d.add_domain(OPERATOR, f"{tenant}.test", tenant, verified=True)
        d.add_mailbox(OPERATOR, FOURTHCOFFEE)
        d.add_mailbox(OPERATOR, PROSEWARE)
        d.add_mailbox(OPERATOR, RC_CLOUD, password=RC_PASSWORD)
        d.add_mailbox(OPERATOR, ANN, password=ANN_PASSWORD)
        d.add_mailbox(OPERATOR, TIM)
        d.add_inbound_connector(
            OPERATOR,
            "proseware",
            "from-the-third-party",
            ConnectorType.PARTNER,
            sender_domains=("*",),
            sender_ips=(NET.third_party,),
            restrict_domains_to_ips=True,
            require_tls=False,
        )
        d.add_inbound_connector(
            OPERATOR,
            "oldco",
            "relay",
            ConnectorType.ON_PREMISES,
            sender_ips=(OLDCO_SERVER,),
            require_tls=False,
        )
        applied = {}
        for scenario, (tenant, parameters) in APPLY.items():
            done = apply_scenario(d, settings.service, OPERATOR, tenant, scenario, parameters)
            applied[scenario] = applied_records(done.as_json())
    finally:
        app.close()
    return applied


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ca = LabCa(tmp_path_factory.mktemp("ca"))
    settings = scenario_node(tmp_path_factory.mktemp("third-party") / "node", NET, ca)
    world_ = internet(NET, ["fabrikam.test"])
    filtering = third_party(NET, CUSTOMERS)
    relecloud = on_premises(NET, 2, "relecloud.test", [RC_ONPREM], ca)
    with (
        lab_dns(NET) as dns,
        started(world_, filtering, relecloud, meanwhile=partial(configure, settings)) as applied,
        running(settings) as node,
    ):
        assert applied is not None
        publish_service(dns, settings, NET)
        senders = " ".join(
            f"ip4:{a}" for a in dict.fromkeys([NET.internet_client, PUBLIC or NET.internet_client])
        )
        publish(
            dns,
            "fabrikam.test",
            mx="mx.fabrikam.test",
            spf=f"v=spf1 {senders} -all",
            hosts={"mx": NET.internet},
        )
        publish(dns, "thirdparty.test", hosts={"filter": NET.third_party})
        # Each organization publishes what its scenario said to (proseware, without one, the same as
        # fourthcoffee; tailwind, hosted, the service's MX and its printer's address).
        published = {
            domain: records for by_domain in applied.values() for domain, records in by_domain.items()
        }
        published["proseware.test"] = published["fourthcoffee.test"]
        published["tailwind.test"] = {
            "MX": postroom_mx(node.app, "tailwind.test"),
            "TXT": f"v=spf1 ip4:{NET.device} {SPF_INCLUDE} -all",
        }
        for domain, records in published.items():
            hosts = {"mail": RELECLOUD_ONPREM} if domain == "relecloud.test" else {}
            publish(dns, domain, mx=records["MX"], spf=records["TXT"], hosts=hosts)
        yield World(settings, node, dns, world_, filtering, relecloud, applied)


def landed(world: World, address: str, subject: str) -> bytes:
    """The one message with `subject` in the mailbox, in its Inbox or Junk folder, once it is there."""
    found: list[bytes] = []

    def there() -> bool:
        found[:] = [
            m
            for folder in ("Inbox", "Junk")
            for m in with_subject(inbox(world.app, address, folder), subject)
        ]
        return bool(found)

    wait_for(there, timeout=30)
    [got] = found
    return got


def through_the_filter(world: World, recipient: str, subject: str, source: str) -> None:
    sent = exchange(
        world.filter.host,
        DAVE,
        [recipient],
        message(DAVE, recipient, subject),
        source=source,
        helo="mta.fabrikam.test",
    )
    assert sent.data is not None and sent.data.code == 250, sent


def spf_results(raw: bytes) -> list[str]:
    return [
        part.strip().split()[0]
        for value in header_values(raw, "Authentication-Results")
        for part in value.split(";")
        if part.strip().startswith("spf=")
    ]


# --- third-party filtering in front (scenario 1) ----------------------------------------------------------


def test_third_party_apply_locks_the_tenant_to_the_third_party_with_enhanced_filtering(world: World) -> None:
    assert world.applied["third-party-filtering"] == {
        "fourthcoffee.test": {"MX": "filter.thirdparty.test", "TXT": f"v=spf1 {SPF_INCLUDE} -all"}
    }
    [partner] = world.app.directory.inbound_connectors(OPERATOR, "fourthcoffee")
    assert partner.type is ConnectorType.PARTNER and partner.restrict_domains_to_ips
    assert partner.sender_ips == (NET.third_party,) and partner.ef_skip_ips == (NET.third_party,)


@pytest.mark.skipif(PUBLIC is None, reason="no local address outside 127/8 and the private ranges")
def test_third_party_with_enhanced_filtering_spf_judges_the_original_sender(world: World) -> None:
    assert PUBLIC is not None
    through_the_filter(world, FOURTHCOFFEE, "tp with enhanced filtering", PUBLIC)
    got = landed(world, FOURTHCOFFEE, "tp with enhanced filtering")
    postroom_hop, filter_hop = header_values(got, "Received")[:2]
    assert "from filter.thirdparty.test" in postroom_hop and NET.third_party in postroom_hop
    assert f"[{PUBLIC}]" in filter_hop
    assert spf_results(got) == ["spf=pass"]
    assert header_values(got, "X-Postroom-SkipListedInternetSender") == [PUBLIC]
    [report] = header_values(got, "X-Postroom-Antispam-Report")
    assert f"CIP:{PUBLIC};" in report


@pytest.mark.skipif(PUBLIC is None, reason="no local address outside 127/8 and the private ranges")
def test_third_party_without_enhanced_filtering_spf_judges_the_third_party(world: World) -> None:
    assert PUBLIC is not None
    through_the_filter(world, PROSEWARE, "tp without enhanced filtering", PUBLIC)
    got = landed(world, PROSEWARE, "tp without enhanced filtering")
    assert spf_results(got) == ["spf=fail"]
    assert header_values(got, "X-Postroom-SkipListedInternetSender") == []
    [report] = header_values(got, "X-Postroom-Antispam-Report")
    assert f"CIP:{NET.third_party};" in report


@pytest.mark.parametrize(
    ("recipient", "code"),
    [
        (FOURTHCOFFEE, "5.7.51"),
        (PROSEWARE, "5.7.51"),
        ("nobody@fourthcoffee.test", "5.4.1"),  # an address nobody has: edge blocking answers first
    ],
)
def test_mail_that_bypasses_the_third_party_is_refused(world: World, recipient: str, code: str) -> None:
    tried = exchange(world.node.mx, DAVE, [recipient], source=NET.internet_client, helo="mta.fabrikam.test")
    reply = tried.rcpt[recipient]
    assert (reply.code, reply.enhanced) == (550, code), reply


# --- third party with hybrid ------------------------------------------------------------------------------


def test_third_party_hybrid_internet_mail_reaches_cloud_and_on_premises_mailboxes(world: World) -> None:
    source = PUBLIC or NET.internet_client
    through_the_filter(world, RC_CLOUD, "tph to the cloud", source)
    through_the_filter(world, RC_ONPREM, "tph to on-premises", source)
    got = landed(world, RC_CLOUD, "tph to the cloud")
    assert "from filter.thirdparty.test" in header_values(got, "Received")[0]
    [onprem] = world.relecloud.wait_for(RC_ONPREM, containing="Subject: tph to on-premises")
    onprem_hop, postroom_hop, filter_hop = header_values(onprem, "Received")[:3]
    assert "by mail.relecloud.test (Postfix)" in onprem_hop and "from mx.postroom.test" in onprem_hop
    assert "from filter.thirdparty.test" in postroom_hop
    assert "by filter.thirdparty.test (Postfix)" in filter_hop


def test_third_party_hybrid_on_premises_mail_goes_out_and_to_the_cloud_through_postroom(world: World) -> None:
    for recipient, subject in ((DAVE, "tph on-premises outbound"), (RC_CLOUD, "tph on-premises to cloud")):
        sent = exchange(world.relecloud.host, RC_ONPREM, [recipient], message(RC_ONPREM, recipient, subject))
        assert sent.data is not None and sent.data.code == 250, sent
    [out] = world.internet.wait_for(DAVE, containing="Subject: tph on-premises outbound")
    assert "from mail.relecloud.test" in header_values(out, "Received")[1]
    # The lock-down is for mail from outside: the tenant's own on-premises server is not refused.
    got = landed(world, RC_CLOUD, "tph on-premises to cloud")
    assert "from mail.relecloud.test" in header_values(got, "Received")[0]


def test_third_party_hybrid_apply_prints_one_spf_record_with_both_senders(world: World) -> None:
    spf = f"v=spf1 ip4:{NET.third_party} ip4:{RELECLOUD_ONPREM} {SPF_INCLUDE} -all"
    assert world.applied["third-party-hybrid"] == {
        "relecloud.test": {"MX": "filter.thirdparty.test", "TXT": spf}
    }
    assert world.app.directory.get_domain(OPERATOR, "relecloud.test").type is DomainType.INTERNAL_RELAY


# --- devices (spec §5) -----------------------------------------------------------------------------------


def test_devices_smtp_auth_submission_reaches_internal_and_external_recipients(world: World) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(*world.node.address("submission"), timeout=30) as client:
        client.starttls(context=context)
        client.login(ANN, ANN_PASSWORD)
        assert client.sendmail(ANN, [DAVE, ANN], message(ANN, DAVE, "dev submission")) == {}
    assert world.internet.wait_for(DAVE, containing="Subject: dev submission")
    landed(world, ANN, "dev submission")


@pytest.mark.parametrize(
    ("printer", "colleague", "refusal"),
    [
        # A tenant with no connector: the anonymous relay refusal.
        ("scanner@tailwind.test", TIM, "5.7.1"),
        # A tenant whose on-premises (device relay) connector does not name this printer's address:
        # the tenant's domain from an address its connectors do not know, 5.7.64 TenantAttribution
        # (spec §3.6: a device missing from the connector's IPs).
        ("scanner@northwind.test", ANN, "5.7.64"),
    ],
)
def test_devices_direct_send_reaches_internal_recipients_only(
    world: World, printer: str, colleague: str, refusal: str
) -> None:
    subject = f"dev direct send from {printer}"
    sent = exchange(
        world.node.mx,
        printer,
        [colleague, DAVE],
        message(printer, colleague, subject),
        source=NET.device,
        helo="printer.lan",
    )
    assert sent.rcpt[colleague].code == 250
    assert (sent.rcpt[DAVE].code, sent.rcpt[DAVE].enhanced) == (550, refusal), sent.rcpt[DAVE]
    assert sent.data is not None and sent.data.code == 250
    landed(world, colleague, subject)


def test_devices_smtp_relay_through_the_ip_connector_reaches_internal_and_external_recipients(
    world: World,
) -> None:
    app = "billing@northwind.test"
    sent = exchange(
        world.node.mx,
        app,
        [ANN, DAVE],
        message(app, DAVE, "dev smtp relay"),
        source=NET.application,
        helo="app.northwind.test",
    )
    assert [r.code for r in sent.rcpt.values()] == [250, 250], sent
    assert sent.data is not None and sent.data.code == 250
    [got] = world.internet.wait_for(DAVE, containing="Subject: dev smtp relay")
    assert NET.application in header_values(got, "Received")[1]
    landed(world, ANN, "dev smtp relay")


def test_devices_the_relay_connector_relays_only_the_tenants_senders(world: World) -> None:
    tried = exchange(world.node.mx, "someone@evil.test", [DAVE], source=NET.application)
    assert (tried.rcpt[DAVE].code, tried.rcpt[DAVE].enhanced) == (550, "5.7.64")


def test_a_tenant_that_reuses_a_removed_tenants_name_inherits_none_of_its_connectors(world: World) -> None:
    def relay_from_oldco_server(subject: str | None = None) -> Reply:
        mail = message("app@oldco.test", DAVE, subject) if subject else None
        tried = exchange(
            world.node.mx, "app@oldco.test", [DAVE], mail, source=OLDCO_SERVER, helo="server.oldco.test"
        )
        return tried.rcpt[DAVE]

    assert relay_from_oldco_server("oldco before").code == 250  # its connector relays it
    world.internet.wait_for(DAVE, containing="Subject: oldco before")
    app = world.app
    remove_tenant(app.database, app.blobs, app.directory, OPERATOR, "oldco", apply=True)
    app.directory.add_tenant(OPERATOR, "oldco")
    app.directory.add_domain(OPERATOR, "oldco.test", "oldco", verified=True)
    replies: list[Reply] = []
    wait_for(lambda: replies.append(relay_from_oldco_server()) or replies[-1].code != 250)
    assert (replies[-1].code, replies[-1].enhanced) == (550, "5.7.1"), replies[-1]  # no connector at all


# --- the unsupported row ----------------------------------------------------------------------------------


def test_third_party_without_filtering_is_refused_with_its_reason_and_changes_nothing(world: World) -> None:
    before = world.app.directory.inbound_connectors(OPERATOR, "proseware")
    refused = postroom(
        "scenario",
        "apply",
        "third-party-no-filtering",
        "--tenant",
        "proseware",
        "--third-party-ip",
        NET.third_party,
        config=world.settings.source,
    )
    assert refused.returncode != 0
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "not supported" in said and "SPF" in said and "third-party-filtering" in said
    assert world.app.directory.inbound_connectors(OPERATOR, "proseware") == before
    assert world.app.directory.scenario(OPERATOR, "proseware") is None
