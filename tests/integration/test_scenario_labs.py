"""The scenario labs themselves (tests/support/onprem.py), with nothing of the connectors in Postroom: an
on-premises Postfix that hosts its mailboxes, bounces on demand, sends the rest to Postroom as its smart
host and presents its client certificate; a third-party filtering Postfix that relays its customers'
mail to Postroom under its own Received header; the internet's catch-all reached by MX; the lab CA's
certificates verifying for their names only; an outage and a recovery.

Postroom here hosts northwind.test (Authoritative, mailbox ann) as the hosted row does, so every hop
into it is one the node takes today. A Postroom-run sink on .11 that insists on a verified client
certificate stands in for a connector-aware Postroom, to prove the on-premises server presents one.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from postroom.app import App
from postroom.model.connectors import certificate_names
from postroom.model.scope import OPERATOR
from postroom.smtp.session import ConnectionInfo, TlsInfo
from tests.conftest import wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running
from tests.support.onprem import (
    PORT,
    LabCa,
    LabNet,
    ScenarioPostfix,
    exchange,
    header_values,
    internet,
    lab_dns,
    message,
    on_premises,
    publish,
    scenario_node,
    started,
    third_party,
)
from tests.support.records import exported, stored_messages
from tests.support.sink import SmtpSink

NET = LabNet(40)
STAND_IN = NET.at(11)  # a sink that wants a client certificate, where a connector-aware Postroom would be
ANN, PASSWORD = "ann@northwind.test", "ann-password-1"
ONPREM1, GONE = "onprem1@contoso.test", "gone@contoso.test"
BOB = "bob@fabrikam.test"  # on the internet


@dataclass
class Labs:
    net: LabNet
    ca: LabCa
    dns: DnsTestServer
    onprem: ScenarioPostfix
    filter: ScenarioPostfix
    internet: ScenarioPostfix
    node: RunningNode
    app: App
    stand_in: StandIn


class StandIn:
    """A Postroom-run sink on its own event loop that requires a client certificate from the lab CA and
    records, per TLS session, the client's address and the names of its verified certificate."""

    def __init__(self, ca: LabCa) -> None:
        server = ca.issue("standin.lab.test")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca_file))
        context.load_cert_chain(server.certificate, server.key)
        context.verify_mode = ssl.CERT_REQUIRED
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stand-in", daemon=True)
        self.sink = SmtpSink(STAND_IN, PORT, hostname="standin.lab.test", tls=context)
        self.peers: list[tuple[str, tuple[str, ...]]] = []  # (peer IP, certificate names) per TLS session
        wrapped = self.sink.listener.factory

        def factory(info: ConnectionInfo) -> object:
            session = wrapped(info)
            started = session.tls_started

            async def tls_started(tls: TlsInfo) -> None:
                self.peers.append((info.peer_ip, certificate_names(tls.peer_subject, tls.peer_sans)))
                await started(tls)

            session.tls_started = tls_started  # type: ignore[method-assign]
            return session

        self.sink.listener.factory = factory  # type: ignore[assignment]

    def __enter__(self) -> StandIn:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sink.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    ca = LabCa(tmp_path_factory.mktemp("ca"))
    settings = scenario_node(tmp_path_factory.mktemp("node") / "node", NET, ca)
    app = App.open(settings)
    d = app.directory
    d.add_tenant(OPERATOR, "northwind")
    d.add_domain(OPERATOR, "northwind.test", "northwind", verified=True)
    d.add_mailbox(OPERATOR, ANN, password=PASSWORD)
    onprem = on_premises(NET, 2, "contoso.test", [ONPREM1], ca, bounces=[GONE])
    onprem.transports = {"tls-check.test": f"smtp:[{STAND_IN}]:{PORT}"}
    filtering = third_party(NET, ["northwind.test"])
    world = internet(NET, ["fabrikam.test"])
    with lab_dns(NET) as dns, StandIn(ca) as stand_in:
        publish(
            dns,
            "fabrikam.test",
            mx="mx.fabrikam.test",
            spf=f"v=spf1 ip4:{NET.internet_client} -all",
            hosts={"mx": NET.internet},
        )
        publish(
            dns,
            "contoso.test",
            mx="mail.contoso.test",
            spf=f"v=spf1 ip4:{onprem.host} -all",
            hosts={"mail": onprem.host},
        )
        publish(dns, "northwind.test", mx="filter.thirdparty.test", spf="v=spf1 -all")
        publish(dns, "thirdparty.test", hosts={"filter": NET.third_party})
        with started(onprem, filtering, world), running(settings) as node:
            yield Labs(NET, ca, dns, onprem, filtering, world, node, app, stand_in)
    app.close()


def inbox(labs: Labs, address: str) -> list[bytes]:
    d, store = labs.app.directory, labs.app.mailstore
    return [exported(d, store, address, m.uid) for m in stored_messages(d, store, address)]


def wait_for_inbox(labs: Labs, address: str, count: int) -> list[bytes]:
    wait_for(lambda: len(inbox(labs, address)) >= count, timeout=30)
    return inbox(labs, address)


def test_the_on_premises_server_hosts_its_mailboxes(labs: Labs) -> None:
    sent = exchange(
        labs.onprem.host,
        BOB,
        [ONPREM1],
        message(BOB, ONPREM1, "to on-premises"),
        source=labs.net.internet_client,
    )
    assert sent.data is not None and sent.data.code == 250, sent
    [arrived] = labs.onprem.wait_for(ONPREM1, containing=b"Subject: to on-premises")
    [received] = header_values(arrived, "Received")
    assert f"[{labs.net.internet_client}]" in received and "by mail.contoso.test (Postfix)" in received


def test_the_on_premises_server_presents_its_client_certificate_to_its_smart_host(labs: Labs) -> None:
    sent = exchange(
        labs.onprem.host,
        ONPREM1,
        ["someone@tls-check.test"],
        message(ONPREM1, "someone@tls-check.test", "certificate"),
    )
    assert sent.data is not None and sent.data.code == 250, sent
    wait_for(
        lambda: any(b"Subject: certificate" in m.content for m in labs.stand_in.sink.messages), timeout=30
    )
    [arrived] = [m for m in labs.stand_in.sink.messages if b"Subject: certificate" in m.content]
    assert arrived.tls.startswith("TLS")
    assert (labs.onprem.host, ("mail.contoso.test",)) in labs.stand_in.peers


def test_the_on_premises_server_sends_the_rest_to_postroom_from_its_own_address(labs: Labs) -> None:
    before = len(inbox(labs, ANN))
    sent = exchange(labs.onprem.host, ONPREM1, [ANN], message(ONPREM1, ANN, "on-premises to cloud"))
    assert sent.data is not None and sent.data.code == 250, sent
    arrived = wait_for_inbox(labs, ANN, before + 1)[-1]
    assert b"Subject: on-premises to cloud" in arrived
    ours, theirs = header_values(arrived, "Received")[:2]
    assert "from mail.contoso.test" in ours and f"{labs.onprem.host}" in ours and "mx.postroom.test" in ours
    assert "by mail.contoso.test (Postfix)" in theirs
    assert any("spf=pass" in v for v in header_values(arrived, "Authentication-Results"))


def test_an_on_premises_bounce_goes_out_through_the_smart_host_with_the_null_sender(labs: Labs) -> None:
    before = len(inbox(labs, ANN))
    sent = exchange(labs.onprem.host, ANN, [GONE], message(ANN, GONE, "to a gone user"))
    assert sent.data is not None and sent.data.code == 250, sent
    ndr = wait_for_inbox(labs, ANN, before + 1)[-1]
    assert header_values(ndr, "Return-Path") == ["<>"]
    assert b"5.1.1" in ndr and GONE.encode() in ndr and b"MAILER-DAEMON@mail.contoso.test" in ndr


def test_the_third_party_relays_its_customers_mail_under_its_received_header(labs: Labs) -> None:
    before = len(inbox(labs, ANN))
    sent = exchange(
        labs.filter.host, BOB, [ANN], message(BOB, ANN, "through the filter"), source=labs.net.internet_client
    )
    assert sent.data is not None and sent.data.code == 250, sent
    arrived = wait_for_inbox(labs, ANN, before + 1)[-1]
    ours, theirs = header_values(arrived, "Received")[:2]
    assert "from filter.thirdparty.test" in ours and labs.net.third_party in ours
    assert f"[{labs.net.internet_client}]" in theirs and "by filter.thirdparty.test (Postfix)" in theirs


def test_postroom_reaches_the_internet_by_mx(labs: Labs) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(*labs.node.address("submission"), timeout=30) as client:
        client.starttls(context=context)
        client.login(ANN, PASSWORD)
        assert client.sendmail(ANN, [BOB], message(ANN, BOB, "to the internet")) == {}
    [arrived] = labs.internet.wait_for(BOB, containing=b"Subject: to the internet")
    assert header_values(arrived, "Delivered-To") == [BOB]
    assert "by mx.internet.test (Postfix)" in header_values(arrived, "Received")[0]


@pytest.mark.parametrize(("name", "verifies"), [("mail.contoso.test", True), ("mail.fabrikam.test", False)])
def test_the_on_premises_certificate_verifies_for_its_own_name_only(
    labs: Labs, name: str, verifies: bool
) -> None:
    context = labs.ca.client_context()
    with socket.create_connection((labs.onprem.host, PORT), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        raw.sendall(b"EHLO client.lab.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220")
        if verifies:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() is not None
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                context.wrap_socket(raw, server_hostname=name)


def test_an_outage_refuses_connections_and_the_server_comes_back_with_its_mail(labs: Labs) -> None:
    before = len(labs.onprem.messages(ONPREM1))
    labs.onprem.halt()
    try:
        with pytest.raises(OSError):
            socket.create_connection((labs.onprem.host, PORT), timeout=2).close()
    finally:
        labs.onprem.resume()
    sent = exchange(
        labs.onprem.host,
        BOB,
        [ONPREM1],
        message(BOB, ONPREM1, "after the outage"),
        source=labs.net.internet_client,
    )
    assert sent.data is not None and sent.data.code == 250
    arrived = labs.onprem.wait_for(ONPREM1, count=before + 1)
    assert len(arrived) == before + 1 and b"Subject: after the outage" in arrived[-1]
