"""Remote delivery over outbound connectors, through real sockets: Postroom-run sinks on 127.0.0.x with
certificates from a test CA (one for the right name, one for another name, one self-signed nobody
trusts, one offering no TLS), servers that misbehave (silent, closing at once, closing mid-transaction),
a port nobody listens on, and smart host names in a loopback DNS server. Each test asserts the reply
each recipient got (the spec's connector codes, spec §3.6), where the message landed, and, for
validation, the steps it reports."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from postroom.app.setup import write_self_signed
from postroom.config.settings import DeliverySettings
from postroom.delivery.remote import LocalEndpoints, RemoteDelivery
from postroom.delivery.validation import validate_connector
from postroom.dns import DnsResolver
from postroom.model.connectors import ConnectorType, OutboundConnector, OutboundTls
from postroom.model.outbound import DeliveryAttempt, OutboundMessage, OutboundRecipient, RecipientResult
from postroom.storage import FileBlobStore
from tests.support.dns_server import DnsTestServer
from tests.support.outbound_connectors import TestAuthority
from tests.support.sink import SmtpSink, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

TENANT = 7
GOOD, WRONG_NAME, UNTRUSTED, PLAIN = "127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"
CLOSED, SILENT, ABRUPT, DROPS = "127.0.0.65", "127.0.0.66", "127.0.0.67", "127.0.0.68"
MX_SINK = "127.0.0.69"
HOST_NAME = "mail.onprem.contoso.test"
ZONE = f"""
mail.onprem   A {GOOD}
wrong         A {WRONG_NAME}
selfsigned    A {UNTRUSTED}
plain         A {PLAIN}
"""


class Misbehaving:
    """A server that is not a good SMTP server: `silent` accepts and never speaks, `abrupt` closes at
    once, `drop-at-mail` greets and answers EHLO, then closes the connection when MAIL comes."""

    def __init__(self, host: str, port: int, mode: str) -> None:
        self.host, self.port, self.mode = host, port, mode
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "silent":
            self._held.append(writer)  # kept open, unanswered, until the server stops
            return
        if self.mode == "drop-at-mail":
            writer.write(b"220 drops.test ESMTP\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"EHLO"):
                    writer.write(b"250-drops.test\r\n250 PIPELINING\r\n")
                    await writer.drain()
                elif line.upper().startswith(b"MAIL"):
                    break
        writer.close()

    async def __aenter__(self) -> Misbehaving:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@dataclasses.dataclass
class Lab:
    dns: DnsTestServer
    port: int
    ca: Path
    sinks: dict[str, SmtpSink]
    blobs: FileBlobStore

    def settings(self, **changes: object) -> DeliverySettings:
        base = DeliverySettings(
            smtp_port=self.port,
            connect_timeout=2.0,
            command_timeout=1.5,
            connection_cache_seconds=0.0,
            tls_ca_file=str(self.ca),
        )
        return dataclasses.replace(base, **changes)

    def agent(self, connector: OutboundConnector | None, **changes: object) -> RemoteDelivery:
        return RemoteDelivery(
            self.settings(**changes),
            DnsResolver(self.dns.settings()),
            self.blobs,
            helo_name="out.postroom.test",
            max_hops=30,
            local=LocalEndpoints(
                names=frozenset({"mx.postroom.test"}), sockets=frozenset({("127.0.0.1", 2525)})
            ),
            outbound_connector=lambda connector_id: connector,
        )

    async def send(
        self, connector: OutboundConnector | None, recipient: str = "user@contoso.test", connector_id: int = 1
    ) -> RecipientResult:
        content = (
            b"From: alice@contoso.test\r\nTo: " + recipient.encode() + b"\r\nSubject: hi\r\n\r\nHello.\r\n"
        )
        message = OutboundMessage("m1", self.blobs.put(content), b"", len(content), 0.0, TENANT)
        attempt = DeliveryAttempt(
            recipient.rpartition("@")[2],
            "alice@contoso.test",
            message,
            (OutboundRecipient(1, recipient, recipient, 0),),
            connector_id,
        )
        [result] = await self.agent(connector).deliver([attempt])
        return result

    def received(self) -> dict[str, list[str]]:
        """Which sinks took which recipients (and whether over TLS)."""
        return {
            name: [f"{','.join(m.recipients)} tls={bool(m.tls)}" for m in sink.messages]
            for name, sink in self.sinks.items()
            if sink.messages
        }


def connector(
    *smart_hosts: str, tls: OutboundTls = OutboundTls.OPPORTUNISTIC, **settings: object
) -> OutboundConnector:
    fields: dict[str, object] = {
        "recipient_domains": ("contoso.test",),
        "smart_hosts": smart_hosts,
        "tls": tls,
        **settings,
    }
    return OutboundConnector(1, TENANT, "to on-premises", ConnectorType.ON_PREMISES, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer({"contoso.test": ZONE, "partner.test": f"@ MX 10 mx\nmx A {MX_SINK}\n"}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(dns: DnsTestServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    directory = tmp_path_factory.mktemp("connector-tls")
    authority = TestAuthority(directory)
    write_self_signed(directory / "self.pem", directory / "self.key", [HOST_NAME])
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # the right name, signed by itself
    untrusted.load_cert_chain(directory / "self.pem", directory / "self.key")
    port = free_port(GOOD)
    async with (
        SmtpSink(GOOD, port, hostname=HOST_NAME, tls=authority.server_context("good", [HOST_NAME])) as good,
        SmtpSink(WRONG_NAME, port, tls=authority.server_context("wrong", ["mail.elsewhere.test"])) as wrong,
        SmtpSink(UNTRUSTED, port, tls=untrusted) as selfsigned,
        SmtpSink(PLAIN, port) as plain,
        SmtpSink(MX_SINK, port, tls=authority.server_context("mx", ["mx.partner.test"])) as mx,
        Misbehaving(SILENT, port, "silent"),
        Misbehaving(ABRUPT, port, "abrupt"),
        Misbehaving(DROPS, port, "drop-at-mail"),
    ):
        sinks = {"good": good, "wrong": wrong, "selfsigned": selfsigned, "plain": plain, "mx": mx}
        yield Lab(dns, port, authority.ca, sinks, FileBlobStore(directory / "blobs"))


@pytest.fixture(autouse=True)
def fresh(lab: Lab) -> None:
    for sink in lab.sinks.values():
        sink.reset()


def code(result: RecipientResult) -> str:
    return f"{result.reply.code} {result.reply.enhanced}"


# --- where the mail goes ----------------------------------------------------------------------------


async def test_a_smart_host_by_ip_and_port(lab: Lab) -> None:
    result = await lab.send(connector(f"{GOOD}:{lab.port}"))
    assert code(result) == "250 2.6.0"
    assert (result.remote_host, result.remote_ip) == (GOOD, GOOD)
    assert lab.received() == {"good": ["user@contoso.test tls=True"]}


async def test_a_smart_host_by_name_from_dns_on_the_default_port(lab: Lab) -> None:
    result = await lab.send(connector(HOST_NAME))
    assert code(result) == "250 2.6.0" and result.remote_host == HOST_NAME
    assert lab.received() == {"good": ["user@contoso.test tls=True"]}


async def test_smart_hosts_are_tried_in_order(lab: Lab) -> None:
    result = await lab.send(
        connector(f"{CLOSED}:{lab.port}", "nowhere.contoso.test", f"plain.contoso.test:{lab.port}")
    )
    assert code(result) == "250 2.6.0" and result.remote_ip == PLAIN
    assert lab.received() == {"plain": ["user@contoso.test tls=False"]}


async def test_use_mx_delivers_to_the_destinations_mx(lab: Lab) -> None:
    result = await lab.send(
        connector(tls=OutboundTls.DOMAIN_VALIDATION, tls_domain="mx.partner.test"), "bob@partner.test"
    )
    assert code(result) == "250 2.6.0" and result.remote_host == "mx.partner.test"
    assert lab.received() == {"mx": ["bob@partner.test tls=True"]}


@pytest.mark.parametrize("why", ["removed", "disabled", "another tenant's"])
async def test_a_connector_gone_since_routing_delivers_by_mx(lab: Lab, why: str) -> None:
    closed = connector(f"{CLOSED}:{lab.port}")
    now = {
        "removed": None,
        "disabled": dataclasses.replace(closed, enabled=False),
        "another tenant's": dataclasses.replace(closed, tenant_id=TENANT + 1),
    }[why]
    result = await lab.send(now, "bob@partner.test")
    assert code(result) == "250 2.6.0" and result.remote_host == "mx.partner.test"
    assert lab.received() == {"mx": ["bob@partner.test tls=True"]}


@pytest.mark.parametrize(
    "smart_hosts",
    [("mx.postroom.test",), ("127.0.0.1:2525",), ("mx.postroom.test", "127.0.0.1:2525")],
)
async def test_a_smart_host_that_is_this_service_is_a_loop(lab: Lab, smart_hosts: tuple[str, ...]) -> None:
    lab.dns.set_zone("postroom.test", "mx A 127.0.0.1\n")
    result = await lab.send(connector(*smart_hosts))
    assert code(result) == "554 5.4.14"
    assert lab.received() == {}


async def test_a_smart_host_of_ours_is_skipped_for_the_next(lab: Lab) -> None:
    result = await lab.send(connector("127.0.0.1:2525", f"{GOOD}:{lab.port}"))
    assert code(result) == "250 2.6.0" and lab.received() == {"good": ["user@contoso.test tls=True"]}


# --- TLS settings ------------------------------------------------------------------------------------

TLS_CASES = [
    # (tls setting, tls_domain, sink, expected)
    (OutboundTls.OPPORTUNISTIC, "", PLAIN, "250 2.6.0"),
    (OutboundTls.OPPORTUNISTIC, "", UNTRUSTED, "250 2.6.0"),
    (OutboundTls.ENCRYPTION_ONLY, "", UNTRUSTED, "250 2.6.0"),
    (OutboundTls.ENCRYPTION_ONLY, "", PLAIN, "450 4.4.317"),
    (OutboundTls.CERTIFICATE_VALIDATION, "", GOOD, "250 2.6.0"),
    (OutboundTls.CERTIFICATE_VALIDATION, "", WRONG_NAME, "250 2.6.0"),  # the chain only, no name
    (OutboundTls.CERTIFICATE_VALIDATION, "", UNTRUSTED, "450 4.7.320"),
    (OutboundTls.CERTIFICATE_VALIDATION, "", PLAIN, "450 4.4.317"),
    (OutboundTls.DOMAIN_VALIDATION, HOST_NAME, GOOD, "250 2.6.0"),
    (OutboundTls.DOMAIN_VALIDATION, "*.contoso.test", GOOD, "250 2.6.0"),
    (OutboundTls.DOMAIN_VALIDATION, HOST_NAME, WRONG_NAME, "450 4.7.320"),
    (OutboundTls.DOMAIN_VALIDATION, "*.contoso.test", WRONG_NAME, "450 4.7.320"),
    (OutboundTls.DOMAIN_VALIDATION, HOST_NAME, UNTRUSTED, "450 4.7.320"),  # the right name, no trust
    (OutboundTls.DOMAIN_VALIDATION, HOST_NAME, PLAIN, "450 4.4.317"),
]


@pytest.mark.parametrize(("tls", "tls_domain", "sink", "expected"), TLS_CASES)
async def test_tls_settings(lab: Lab, tls: OutboundTls, tls_domain: str, sink: str, expected: str) -> None:
    result = await lab.send(connector(f"{sink}:{lab.port}", tls=tls, tls_domain=tls_domain))
    assert code(result) == expected, result.reply
    taken = [m for s in lab.sinks.values() for m in s.messages]
    assert len(taken) == (1 if expected.startswith("250") else 0)
    if tls is not OutboundTls.OPPORTUNISTIC and taken:
        assert taken[0].tls.startswith("TLSv1")
    if expected != "250 2.6.0":
        assert f"{sink}" in result.reply.text  # the reply names the host it could not use


# --- failures and their codes (spec §3.6) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("smart_host", "expected"),
    [
        ("nowhere.contoso.test", "450 4.4.312"),  # no such name
        (f"{CLOSED}:{{port}}", "450 4.4.316"),  # nobody listens
        (f"{SILENT}:{{port}}", "450 4.4.315"),  # accepts, never greets
        (f"{ABRUPT}:{{port}}", "450 4.4.318"),  # accepts, closes at once
        (f"{DROPS}:{{port}}", "450 4.4.318"),  # closes in the middle of the transaction
    ],
)
async def test_connection_failures_answer_the_connector_codes(
    lab: Lab, smart_host: str, expected: str
) -> None:
    result = await lab.send(connector(smart_host.format(port=lab.port)))
    assert code(result) == expected, result.reply


async def test_a_dns_failure_of_the_destinations_mx_is_4_4_312(lab: Lab) -> None:
    lab.dns.set_failure("broken.test")
    result = await lab.send(connector(), "bob@broken.test")
    assert code(result) == "450 4.4.312"


# --- validation --------------------------------------------------------------------------------------


async def validate(lab: Lab, subject: OutboundConnector, *recipients: str) -> list[tuple[str, bool, str]]:
    [result] = await validate_connector(
        subject,
        list(recipients) or ["user@contoso.test"],
        settings=lab.settings(),
        resolver=DnsResolver(lab.dns.settings()),
        helo_name="out.postroom.test",
        local=LocalEndpoints(),
        sender="postmaster@contoso.test",
    )
    assert result.ok is all(step.ok for step in result.steps)
    return [(s.step, s.ok, s.reply.split(" ", 2)[1] if s.reply else "") for s in result.steps]


async def test_validation_passes_every_step_and_sends_a_test_message(lab: Lab) -> None:
    subject = connector(
        HOST_NAME, tls=OutboundTls.DOMAIN_VALIDATION, tls_domain="*.contoso.test", enabled=False
    )
    steps = await validate(lab, subject)
    assert steps == [("dns", True, ""), ("tcp", True, ""), ("tls", True, ""), ("message", True, "")]
    [message] = lab.sinks["good"].messages
    assert message.sender == "postmaster@contoso.test" and message.recipients == ("user@contoso.test",)
    assert b"Subject: Postroom connector validation" in message.content
    assert message.tls.startswith("TLSv1")


@pytest.mark.parametrize(
    ("smart_host", "tls", "expected"),
    [
        ("nowhere.contoso.test", OutboundTls.OPPORTUNISTIC, [("dns", False, "4.4.312")]),
        (f"{CLOSED}:{{port}}", OutboundTls.OPPORTUNISTIC, [("dns", True, ""), ("tcp", False, "4.4.316")]),
        (
            f"{PLAIN}:{{port}}",
            OutboundTls.ENCRYPTION_ONLY,
            [("dns", True, ""), ("tcp", True, ""), ("tls", False, "4.4.317")],
        ),
        (
            f"{UNTRUSTED}:{{port}}",
            OutboundTls.CERTIFICATE_VALIDATION,
            [("dns", True, ""), ("tcp", True, ""), ("tls", False, "4.7.320")],
        ),
        (
            f"{PLAIN}:{{port}}",
            OutboundTls.OPPORTUNISTIC,
            [("dns", True, ""), ("tcp", True, ""), ("tls", True, ""), ("message", True, "")],
        ),
    ],
)
async def test_validation_stops_at_the_step_that_fails(
    lab: Lab, smart_host: str, tls: OutboundTls, expected: list[tuple[str, bool, str]]
) -> None:
    assert await validate(lab, connector(smart_host.format(port=lab.port), tls=tls)) == expected


async def test_validation_reports_a_recipient_the_destination_refuses(lab: Lab) -> None:
    from postroom.model.replies import Reply

    lab.sinks["good"].behaviour.recipients["nobody@contoso.test"] = Reply(550, "5.1.1", "No such user")
    steps = await validate(lab, connector(HOST_NAME), "nobody@contoso.test")
    assert steps[-1] == ("message", False, "5.1.1")
