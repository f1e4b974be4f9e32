"""The outbound SMTP client against Postroom-run sinks on 127.0.0.x, with MX records in a test DNS server.

Every test goes through real sockets: `RemoteDelivery.deliver` resolves the destination's MX in the
DnsTestServer, connects to the sinks (the project's own SMTP listener), and the assertions are on what
the sinks received and on the reply each recipient was settled with.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from postroom.app.setup import write_self_signed
from postroom.config.settings import DeliverySettings
from postroom.delivery.remote import LocalEndpoints, RemoteDelivery
from postroom.directory.dkim import generate_key_pair
from postroom.dns import DnsResolver
from postroom.model.outbound import (
    DeliveryAttempt,
    DkimSigner,
    OutboundMessage,
    OutboundRecipient,
    RecipientResult,
)
from postroom.model.replies import Reply
from postroom.storage import BlobStore, FileBlobStore
from tests.support.dns_server import DnsTestServer
from tests.support.scripted_smtp import ScriptedSmtp
from tests.support.sink import SmtpSink, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELO = "out.postroom.test"
ZONE = """
@            MX 10 mx1
@            MX 20 mx2
mx1          A 127.0.0.11
mx2          A 127.0.0.12
dead         A 127.0.0.19
old-mx       A 127.0.0.13
fallback     MX 10 dead
fallback     MX 20 mx2
implicit     A 127.0.0.12
null         MX 0 .
old          MX 10 old-mx
loop         MX 10 mx.postroom.test.
loop-second  MX 10 mx.postroom.test.
loop-second  MX 20 mx2
piped        MX 10 piped-mx
piped-mx     A 127.0.0.14
unpiped      MX 10 unpiped-mx
unpiped-mx   A 127.0.0.15
badtls       MX 10 badtls-mx
badtls-mx    A 127.0.0.16
danebad      MX 10 badtls-mx
"""


class Network:
    """The test DNS, three sinks and a blob store, shared by the module's tests."""

    def __init__(
        self,
        dns: DnsTestServer,
        mx1: SmtpSink,
        mx2: SmtpSink,
        old: SmtpSink,
        scripted: tuple[ScriptedSmtp, ScriptedSmtp, ScriptedSmtp],
        blobs: BlobStore,
    ):
        self.dns = dns
        self.mx1 = mx1
        self.mx2 = mx2
        self.old = old
        self.piped, self.unpiped, self.badtls = scripted
        self.blobs = blobs
        self.port = mx1.port
        self._ids = 0

    def agent(self, **changes: object) -> RemoteDelivery:
        """An agent on the test network; without the connection cache unless a test asks for it (the
        sinks are shared by the module's tests, and an idle connection would count in the next one's)."""
        base = DeliverySettings(
            smtp_port=self.port, connect_timeout=2.0, command_timeout=5.0, connection_cache_seconds=0.0
        )
        settings = dataclasses.replace(base, **changes)
        return RemoteDelivery(
            settings,
            DnsResolver(self.dns.settings()),
            self.blobs,
            helo_name=HELO,
            max_hops=30,
            local=LocalEndpoints(names=frozenset({"mx.postroom.test"})),
        )

    def attempt(self, recipients: list[str], content: bytes | None = None, sender: str = "alice@contoso.com"):
        self._ids += 1
        content = content or message()
        blob_id = self.blobs.put(content)
        prefix = b"Received: from client (127.0.0.1) by mx.postroom.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        outbound = OutboundMessage(f"m{self._ids}", blob_id, prefix, len(prefix) + len(content), 0.0, 1)
        rows = tuple(OutboundRecipient(self._ids * 100 + i, r, r, 0) for i, r in enumerate(recipients))
        return DeliveryAttempt(recipients[0].rpartition("@")[2], sender, outbound, rows)


def message(subject: str = "Hello", body: bytes = b"Hi there.\r\n", headers: bytes = b"") -> bytes:
    return (
        b"From: Alice <alice@contoso.com>\r\nTo: bob@remote.test\r\nSubject: "
        + subject.encode()
        + b"\r\nMessage-ID: <1@contoso.com>\r\n"
        + headers
        + b"\r\n"
        + body
    )


def codes(results: list[RecipientResult]) -> list[tuple[int, str | None]]:
    return [(r.reply.code, r.reply.enhanced) for r in sorted(results, key=lambda r: r.queue_id)]


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("sink-tls")
    write_self_signed(directory / "cert.pem", directory / "key.pem", ["mx1.remote.test"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer({"remote.test": ZONE, "postroom.test": "mx A 127.0.0.1"}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def network(
    dns: DnsTestServer, tls_context: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Network]:
    port = free_port("127.0.0.11")
    old_server = frozenset({"8BITMIME", "SMTPUTF8", "STARTTLS", "PIPELINING"})
    async with (
        SmtpSink("127.0.0.11", port, hostname="mx1.remote.test", tls=tls_context) as mx1,
        SmtpSink("127.0.0.12", port, hostname="mx2.remote.test") as mx2,
        SmtpSink("127.0.0.13", port, hostname="old-mx.remote.test", hidden=old_server) as old,
        ScriptedSmtp("127.0.0.14", port) as piped,
        ScriptedSmtp("127.0.0.15", port, keywords=("8BITMIME",)) as unpiped,
        ScriptedSmtp("127.0.0.16", port, break_tls=True) as badtls,
    ):
        blobs = FileBlobStore(Path(tmp_path_factory.mktemp("blobs")))
        yield Network(dns, mx1, mx2, old, (piped, unpiped, badtls), blobs)


@pytest.fixture(autouse=True)
def fresh(network: Network) -> None:
    for sink in (network.mx1, network.mx2, network.old):
        sink.reset()
    for server in (network.piped, network.unpiped, network.badtls):
        server.reset()


async def test_delivers_to_the_preferred_mx_over_starttls(network: Network) -> None:
    attempt = network.attempt(["bob@remote.test", "carol@remote.test"])
    results = await network.agent().deliver([attempt])
    assert codes(results) == [(250, "2.6.0"), (250, "2.6.0")]
    assert {(r.remote_host, r.remote_ip) for r in results} == {("mx1.remote.test", "127.0.0.11")}
    assert all(r.tls.startswith("TLSv1") for r in results)
    [received] = network.mx1.messages
    assert received.tls.startswith("TLSv1")
    assert received.sender == "alice@contoso.com"
    assert received.recipients == ("bob@remote.test", "carol@remote.test")
    assert received.content.startswith(b"Received: from client")
    assert received.content.endswith(b"Hi there.\r\n")
    assert network.mx1.helo_names == [HELO, HELO]  # EHLO before and after STARTTLS
    assert network.mx2.messages == []


async def test_a_refusing_greeting_moves_on_to_the_next_mx(network: Network) -> None:
    network.mx1.behaviour.connect = Reply(421, "4.3.2", "busy")
    results = await network.agent().deliver([network.attempt(["bob@remote.test"])])
    assert codes(results) == [(250, "2.6.0")]
    assert results[0].remote_host == "mx2.remote.test"
    assert len(network.mx2.messages) == 1 and network.mx1.messages == []


async def test_an_mx_that_refuses_connections_moves_on_to_the_next(network: Network) -> None:
    results = await network.agent().deliver([network.attempt(["bob@fallback.remote.test"])])
    assert codes(results) == [(250, "2.6.0")]
    assert results[0].remote_ip == "127.0.0.12"


async def test_every_mx_down_defers(network: Network) -> None:
    network.mx1.behaviour.connect = Reply(421, "4.3.2", "busy")
    network.mx2.behaviour.connect = Reply(554, "5.3.2", "no service")
    results = await network.agent().deliver([network.attempt(["bob@remote.test"])])
    assert results[0].reply.code == 554  # the last host's word; the queue decides by its class


async def test_implicit_mx_is_the_domain_address(network: Network) -> None:
    results = await network.agent().deliver([network.attempt(["bob@implicit.remote.test"])])
    assert codes(results) == [(250, "2.6.0")]
    assert results[0].remote_host == "implicit.remote.test"
    assert network.mx2.messages[0].recipients == ("bob@implicit.remote.test",)


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("bob@null.remote.test", (556, "5.1.10")),  # RFC 7505 null MX: at once, permanent
        ("bob@nope.remote.test", (550, "5.1.2")),  # NXDOMAIN: bad destination system
        ("bob@servfail.remote.test", (451, "4.4.3")),  # DNS failure: retry
        ("bob@loop.remote.test", (554, "5.4.14")),  # the MX is this service
    ],
)
async def test_destinations_without_a_usable_mail_host(
    network: Network, recipient: str, expected: tuple[int, str]
) -> None:
    network.dns.set_failure("servfail.remote.test")
    results = await network.agent().deliver([network.attempt([recipient])])
    assert codes(results) == [expected]
    assert not (network.mx1.messages or network.mx2.messages)


async def test_an_mx_list_naming_this_service_keeps_only_more_preferred_hosts(network: Network) -> None:
    # RFC 5321 §5.1: we are the preference-10 host, so the preference-20 one is not tried either.
    results = await network.agent().deliver([network.attempt(["bob@loop-second.remote.test"])])
    assert codes(results) == [(554, "5.4.14")]
    assert network.mx2.messages == []


async def test_recipients_are_settled_one_by_one(network: Network) -> None:
    network.mx1.behaviour.recipients = {
        "gone@remote.test": Reply(550, "5.1.1", "no such user"),
        "full@remote.test": Reply(452, "4.2.2", "mailbox full"),
    }
    attempt = network.attempt(["bob@remote.test", "gone@remote.test", "full@remote.test"])
    results = await network.agent().deliver([attempt])
    assert codes(results) == [(250, "2.6.0"), (550, "5.1.1"), (452, "4.2.2")]
    assert network.mx1.messages[0].recipients == ("bob@remote.test",)


async def test_the_reply_to_data_settles_every_accepted_recipient(network: Network) -> None:
    network.mx1.behaviour.data = Reply(554, "5.7.1", "spam")
    results = await network.agent().deliver([network.attempt(["bob@remote.test", "carol@remote.test"])])
    assert codes(results) == [(554, "5.7.1"), (554, "5.7.1")]


async def test_several_messages_share_one_connection(network: Network) -> None:
    attempts = [network.attempt([f"user{i}@remote.test"]) for i in range(4)]
    results = await network.agent().deliver(attempts)
    assert codes(results) == [(250, "2.6.0")] * 4
    assert network.mx1.connections == 1
    assert [m.recipients for m in network.mx1.messages] == [(f"user{i}@remote.test",) for i in range(4)]


async def test_messages_per_connection_are_bounded(network: Network) -> None:
    attempts = [network.attempt([f"user{i}@remote.test"]) for i in range(5)]
    results = await network.agent(max_messages_per_connection=2).deliver(attempts)
    assert codes(results) == [(250, "2.6.0")] * 5
    assert network.mx1.connections == 3


async def test_the_connection_cache_reuses_a_connection_across_calls_and_checks_it_first(
    network: Network,
) -> None:
    agent = network.agent(connection_cache_seconds=30.0)
    before = network.mx1.connections
    for n in range(3):
        results = await agent.deliver([network.attempt([f"cached{n}@remote.test"])])
        assert codes(results) == [(250, "2.6.0")]
    assert network.mx1.connections == before + 1  # three calls, one connection
    # The idle connection dies: the next call does not use it and opens a new one.
    for connection, _ in agent._idle["remote.test"]:
        connection.client.close()
    results = await agent.deliver([network.attempt(["cached3@remote.test"])])
    assert codes(results) == [(250, "2.6.0")]
    assert network.mx1.connections == before + 2
    await agent.close()


async def test_connections_per_destination_are_bounded(network: Network) -> None:
    attempts = [network.attempt([f"user{i}@remote.test"]) for i in range(8)]
    agent = network.agent(max_messages_per_connection=1, max_connections_per_destination=2)
    results = await agent.deliver(attempts)
    assert codes(results) == [(250, "2.6.0")] * 8
    assert network.mx1.connections == 8
    assert network.mx1.most_concurrent == 2


async def test_a_421_mid_session_defers_what_was_not_settled(network: Network) -> None:
    network.mx1.behaviour.close_after = 1
    attempts = [network.attempt(["a@remote.test"]), network.attempt(["b@remote.test", "c@remote.test"])]
    attempts.append(network.attempt(["d@remote.test"]))
    results = await network.agent().deliver(attempts)
    assert codes(results) == [(250, "2.6.0"), (421, "4.3.2"), (421, "4.3.2"), (421, "4.3.2")]
    assert len(network.mx1.messages) == 1


async def test_eight_bit_content_goes_as_8bitmime_where_offered(network: Network) -> None:
    mime = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    content = message(body="Grüße aus Köln\r\n".encode(), headers=mime)
    results = await network.agent().deliver([network.attempt(["bob@remote.test"], content)])
    assert codes(results) == [(250, "2.6.0")]
    [received] = network.mx1.messages
    assert received.body_8bitmime
    assert received.content.endswith("Grüße aus Köln\r\n".encode())


async def test_eight_bit_content_is_converted_for_a_server_without_8bitmime(network: Network) -> None:
    mime = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    content = message(body="Grüße aus Köln\r\n".encode(), headers=mime)
    results = await network.agent().deliver([network.attempt(["bob@old.remote.test"], content)])
    assert codes(results) == [(250, "2.6.0")]
    [received] = network.old.messages
    assert received.content.isascii() and not received.body_8bitmime
    parsed = email.message_from_bytes(received.content, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln" in received.content
    assert parsed.get_content().replace("\r\n", "\n") == "Grüße aus Köln\n"
    assert parsed["Subject"] == "Hello"


async def test_eight_bit_content_that_cannot_be_converted_fails_5_6_7(network: Network) -> None:
    content = message(body="Grüße ohne MIME\r\n".encode())  # no MIME-Version: the charset is unknown
    results = await network.agent().deliver([network.attempt(["bob@old.remote.test"], content)])
    assert codes(results) == [(554, "5.6.7")]
    assert network.old.messages == []


async def test_utf8_headers_to_a_server_without_smtputf8_fail_5_6_7(network: Network) -> None:
    content = message(subject="Grüße")  # raw UTF-8 in a header (RFC 6532)
    results = await network.agent().deliver([network.attempt(["bob@old.remote.test"], content)])
    assert codes(results) == [(554, "5.6.7")]
    assert network.old.messages == []


async def test_utf8_headers_go_with_smtputf8_where_offered(network: Network) -> None:
    results = await network.agent().deliver([network.attempt(["bob@remote.test"], message(subject="Grüße"))])
    assert codes(results) == [(250, "2.6.0")]
    assert network.mx1.messages[0].smtputf8


async def test_a_utf8_recipient_fails_alone_at_a_server_without_smtputf8(network: Network) -> None:
    attempt = network.attempt(["bob@old.remote.test", "jürgen@old.remote.test"])
    results = await network.agent().deliver([attempt])
    assert codes(results) == [(250, "2.6.0"), (554, "5.6.7")]
    assert network.old.messages[0].recipients == ("bob@old.remote.test",)


async def test_too_many_received_headers_is_a_loop(network: Network) -> None:
    hops = b"".join(
        b"Received: from hop%d by relay; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % i for i in range(30)
    )
    looping = network.attempt(["bob@remote.test"], hops + message())  # 30 + the prefix's: 31
    fine = network.attempt(["carol@remote.test"], b"".join(hops.splitlines(keepends=True)[1:]) + message())
    results = await network.agent().deliver([looping, fine])
    assert codes(results) == [(554, "5.4.14"), (250, "2.6.0")]
    assert [m.recipients for m in network.mx1.messages] == [("carol@remote.test",)]


async def test_a_message_larger_than_the_server_takes_is_not_sent(network: Network) -> None:
    big = message(body=b"x" * 1000 + b"\r\n")
    network.mx1.listener.limits = dataclasses.replace(network.mx1.listener.limits, max_message_size=500)
    try:
        results = await network.agent().deliver([network.attempt(["bob@remote.test"], big)])
    finally:
        network.mx1.listener.limits = dataclasses.replace(
            network.mx1.listener.limits, max_message_size=36_700_160
        )
    assert codes(results) == [(552, "5.3.4")]
    assert network.mx1.messages == []


# --- PIPELINING (RFC 2920), seen from a server that records what each read of its socket held


async def test_pipelining_sends_mail_rcpt_and_data_in_one_write(network: Network) -> None:
    attempts = [network.attempt([f"a{i}@piped.remote.test", f"b{i}@piped.remote.test"]) for i in range(2)]
    results = await network.agent().deliver(attempts)
    assert codes(results) == [(250, "2.0.0")] * 4
    [connection] = network.piped.connections
    assert connection.reads == [
        ["EHLO"],
        ["MAIL", "RCPT", "RCPT", "DATA"],  # one group: DATA is its last command
        ["RSET", "MAIL", "RCPT", "RCPT", "DATA"],  # the next message, RSET in the same group
        ["QUIT"],
    ]
    assert [m[1] for m in network.piped.messages] == [
        ("a0@piped.remote.test", "b0@piped.remote.test"),
        ("a1@piped.remote.test", "b1@piped.remote.test"),
    ]


async def test_without_pipelining_each_command_waits_for_its_reply(network: Network) -> None:
    attempts = [network.attempt([f"a{i}@unpiped.remote.test", f"b{i}@unpiped.remote.test"]) for i in range(2)]
    results = await network.agent().deliver(attempts)
    assert codes(results) == [(250, "2.0.0")] * 4
    [connection] = network.unpiped.connections
    one_transaction = [["MAIL"], ["RCPT"], ["RCPT"], ["DATA"]]
    assert connection.reads == [["EHLO"], *one_transaction, ["RSET"], *one_transaction, ["QUIT"]]
    assert len(network.unpiped.messages) == 2


async def test_the_project_listener_without_pipelining_still_gets_the_mail(network: Network) -> None:
    attempts = [network.attempt([f"user{i}@old.remote.test", "x@old.remote.test"]) for i in range(3)]
    results = await network.agent().deliver(attempts)
    assert codes(results) == [(250, "2.6.0")] * 6
    assert network.old.connections == 1 and len(network.old.messages) == 3


async def test_a_refused_rcpt_in_a_pipelined_group_fails_only_that_recipient(network: Network) -> None:
    network.piped.refused = {
        "gone@piped.remote.test": "550 5.1.1 no such user",
        "full@piped.remote.test": "452 4.2.2 mailbox full",
    }
    try:
        attempt = network.attempt(
            ["bob@piped.remote.test", "gone@piped.remote.test", "full@piped.remote.test"]
        )
        results = await network.agent().deliver([attempt])
    finally:
        network.piped.refused = {}
    assert codes(results) == [(250, "2.0.0"), (550, "5.1.1"), (452, "4.2.2")]
    assert network.piped.connections[0].reads[1] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]
    assert [m[1] for m in network.piped.messages] == [("bob@piped.remote.test",)]


async def test_every_rcpt_refused_in_a_group_keeps_each_reply_and_the_connection(network: Network) -> None:
    # DATA is answered 554 (no valid recipients); each recipient keeps its own RCPT reply, and the
    # next message on the same connection still goes.
    network.piped.refused = {"gone@piped.remote.test": "550 5.1.1 no such user"}
    try:
        first = network.attempt(["gone@piped.remote.test"])
        second = network.attempt(["bob@piped.remote.test"])
        results = await network.agent().deliver([first, second])
    finally:
        network.piped.refused = {}
    assert codes(results) == [(550, "5.1.1"), (250, "2.0.0")]
    assert len(network.piped.connections) == 1
    assert [m[1] for m in network.piped.messages] == [("bob@piped.remote.test",)]


# --- opportunistic TLS: a failed handshake falls back to plaintext unless a policy requires TLS


async def test_a_failed_opportunistic_handshake_retries_the_host_in_plaintext(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="postroom.delivery.remote"):
        results = await network.agent().deliver([network.attempt(["bob@badtls.remote.test"])])
    assert codes(results) == [(250, "2.0.0")]
    assert results[0].tls == "" and results[0].remote_ip == "127.0.0.16"
    first, second = network.badtls.connections
    assert first.starttls and not second.starttls
    assert [m[1] for m in network.badtls.messages] == [("bob@badtls.remote.test",)]
    assert "retrying in plaintext" in caplog.text


async def test_dane_never_falls_back_to_plaintext(network: Network) -> None:
    tlsa = f"_{network.port}._tcp.badtls-mx.remote.test"
    network.dns.add_records(tlsa, "TLSA", "3 1 1 " + "ab" * 32)
    network.dns.set_authenticated(tlsa)
    try:
        results = await network.agent().deliver([network.attempt(["bob@danebad.remote.test"])])
    finally:
        network.dns.set_authenticated(tlsa, False)
        network.dns.remove_records(tlsa, "TLSA")
    assert codes(results) == [(451, "4.7.323")]
    assert len(network.badtls.connections) == 1 and network.badtls.connections[0].starttls
    assert network.badtls.messages == []


async def test_an_address_with_a_line_break_is_refused_not_sent(network: Network) -> None:
    injected = "x@piped.remote.test>\r\nRCPT TO:<y@piped.remote.test"
    results = await network.agent().deliver([network.attempt(["bob@piped.remote.test", injected])])
    assert codes(results) == [(250, "2.0.0"), (501, "5.1.3")]
    assert network.piped.connections[0].reads[1] == ["MAIL", "RCPT", "DATA"]
    assert [m[1] for m in network.piped.messages] == [("bob@piped.remote.test",)]


async def test_a_forward_is_sealed_over_the_octets_sent_then_signed(network: Network) -> None:
    # The hooks stand in for the app's: the tenant seals what carries our results, the From domain signs.
    sealed: list[bytes] = []
    asked: list[tuple[int | None, bytes]] = []

    def sealer(content: bytes) -> bytes:
        sealed.append(content)
        return b"ARC-Seal: i=1; cv=none; d=contoso.com\r\n"

    def arc_sealer(tenant_id: int | None, head: bytes):  # type: ignore[no-untyped-def]
        asked.append((tenant_id, head))
        return sealer if b"Authentication-Results: mx.postroom.test;" in head else None

    pair = generate_key_pair()
    base = network.agent()
    forwarding = RemoteDelivery(
        base.settings,
        base.resolver,
        network.blobs,
        helo_name=HELO,
        max_hops=30,
        local=base.local,
        arc_sealer=arc_sealer,
        dkim_signer=lambda tenant, domain: DkimSigner("contoso.com", "s1", pair.private_key_pem),
    )
    forwarded = (
        b"Authentication-Results: mx.postroom.test; spf=pass smtp.mailfrom=contoso.com\r\n" + message()
    )
    results = await forwarding.deliver(
        [network.attempt(["bob@remote.test"], forwarded), network.attempt(["carol@remote.test"])]
    )
    assert codes(results) == [(250, "2.6.0"), (250, "2.6.0")]
    assert [tenant for tenant, _ in asked] == [1, 1]
    [forward, ordinary] = sorted(network.mx1.messages, key=lambda m: m.recipients)
    assert forward.content.startswith(b"DKIM-Signature: ")  # signed last, over the sealed message
    signature_end = forward.content.index(b"ARC-Seal: ")
    assert forward.content[signature_end:] == b"ARC-Seal: i=1; cv=none; d=contoso.com\r\n" + sealed[0]
    assert sealed[0].startswith(b"Received: from client") and sealed[0].endswith(b"Hi there.\r\n")
    assert b"ARC-Seal" not in ordinary.content  # no results of ours: not a forward, not sealed
