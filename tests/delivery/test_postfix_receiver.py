"""Delivery to a real MTA: Postfix from the distribution, a private instance on 127.0.0.21, found by MX.

The message must arrive in Postfix's Maildir with its header section intact (our Received prefix, the
author's fields) under Postfix's own Received line, and the reply Postfix gave must settle the recipient.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from dns.resolver import Resolver as StubResolver

from postroom.config.settings import DeliverySettings
from postroom.delivery.remote import RemoteDelivery
from postroom.directory.dkim import generate_key_pair
from postroom.dns import DnsResolver
from postroom.model.outbound import DeliveryAttempt, DkimSigner, OutboundMessage, OutboundRecipient
from postroom.storage import FileBlobStore
from tests.support.dns_server import DnsTestServer
from tests.support.postfix import PostfixLab, free_port

HOST = "127.0.0.21"
DOMAIN = "postfix.test"


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixLab]:
    with PostfixLab(port=free_port(HOST), host=HOST, domain=DOMAIN, in_flow_delay="0s") as lab:
        yield lab


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer({DOMAIN: f"@ MX 10 mx\nmx A {HOST}", "contoso.com": ""}) as server:
        yield server


def wait_for_mail(lab: PostfixLab, count: int, timeout: float = 20.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(p for sub in ("new", "cur") for p in (lab.maildir / sub).iterdir())
        if len(files) >= count:
            return [p.read_bytes() for p in files]
        time.sleep(0.1)
    raise AssertionError(f"Postfix delivered {lab.delivered()} message(s), not {count}:\n{lab.log_tail()}")


async def test_a_message_arrives_at_postfix_with_its_headers_intact(
    postfix: PostfixLab, dns: DnsTestServer, tmp_path: Path
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    body = (
        b"From: Alice <alice@contoso.com>\r\nTo: <user@postfix.test>\r\nSubject: To a real MTA\r\n"
        b"Message-ID: <postfix-1@contoso.com>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
        b"Hello Postfix.\r\n.leading dot\r\n"
    )
    prefix = b"Received: from client (127.0.0.1) by mx.postroom.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    message = OutboundMessage("pf1", blobs.put(body), prefix, len(prefix) + len(body), 0.0, 1)
    attempt = DeliveryAttempt(
        DOMAIN,
        "alice@contoso.com",
        message,
        (
            OutboundRecipient(1, postfix.recipient, postfix.recipient, 0),
            OutboundRecipient(2, "nobody@postfix.test", "nobody@postfix.test", 0),
        ),
    )
    agent = RemoteDelivery(
        DeliverySettings(smtp_port=postfix.port, connect_timeout=5.0, command_timeout=30.0),
        DnsResolver(dns.settings()),
        blobs,
        helo_name="out.postroom.test",
        max_hops=30,
    )
    results = await agent.deliver([attempt])
    by_queue_id = {r.queue_id: r for r in results}
    assert by_queue_id[1].reply.code == 250 and by_queue_id[1].remote_ip == HOST
    assert (by_queue_id[2].reply.code, by_queue_id[2].reply.enhanced) == (550, "5.1.1")  # unknown user
    [arrived] = await asyncio.to_thread(wait_for_mail, postfix, 1)
    postfix_hop, ours, _ = arrived.partition((prefix + body).replace(b"\r\n", b"\n"))
    assert ours, f"the message was altered on the way:\n{arrived.decode()}"  # Maildir lines end in LF
    assert b"Received: from out.postroom.test (" in postfix_hop  # Postfix's hop, above ours
    assert b"Return-Path: <alice@contoso.com>" in postfix_hop


async def test_a_dkim_signature_verifies_on_arrival_at_postfix(
    postfix: PostfixLab, dns: DnsTestServer, tmp_path: Path
) -> None:
    pair = generate_key_pair()
    dns.add_txt("s1._domainkey.contoso.com", f"v=DKIM1; k=rsa; p={pair.public_key}")
    signer = DkimSigner("contoso.com", "s1", pair.private_key_pem)
    blobs = FileBlobStore(tmp_path / "blobs")
    body = (
        b"From: Alice <alice@contoso.com>\r\nTo: <user@postfix.test>\r\nSubject: Signed\r\n"
        b"Message-ID: <postfix-2@contoso.com>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
        b"Signed body.\r\n"
    )
    message = OutboundMessage("pf2", blobs.put(body), b"", len(body), 0.0, 7)
    recipient = OutboundRecipient(1, postfix.recipient, postfix.recipient, 0)
    asked: list[tuple[int | None, str]] = []

    def dkim_signer(tenant_id: int | None, from_domain: str) -> DkimSigner | None:
        asked.append((tenant_id, from_domain))
        return signer

    agent = RemoteDelivery(
        DeliverySettings(smtp_port=postfix.port, connect_timeout=5.0, command_timeout=30.0),
        DnsResolver(dns.settings()),
        blobs,
        helo_name="out.postroom.test",
        max_hops=30,
        dkim_signer=dkim_signer,
    )
    before = postfix.delivered()
    [result] = await agent.deliver([DeliveryAttempt(DOMAIN, "alice@contoso.com", message, (recipient,))])
    assert result.reply.code == 250
    assert asked == [(7, "contoso.com")]
    arrived = next(
        m for m in await asyncio.to_thread(wait_for_mail, postfix, before + 1) if b"Signed body" in m
    )
    assert b"DKIM-Signature:" in arrived

    resolver = StubResolver(configure=False)
    resolver.nameservers = [dns.host]
    resolver.port = dns.port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    assert dkim.verify(arrived.replace(b"\n", b"\r\n"), dnsfunc=dnsfunc)
