"""Validating an outbound connector (spec §3.5): a real delivery of a test message to each recipient,
over the connector, reported step by step.

`validate_connector(connector, recipients, *, settings, resolver, helo_name, local, sender, clock)`
sends one test message per recipient (From and MAIL FROM `sender`, the tenant's postmaster; Subject
"Postroom connector validation") through `delivery.remote.RemoteDelivery`, the agent the queue
delivers with, so validation connects exactly as delivery will: the same smart hosts or MX, the same
loop guard, the same TLS rules and the same failure codes. Each recipient gets a `ValidationResult`
with the steps of a delivery, in order:

- `dns`: the smart hosts' addresses (A/AAAA), or the recipient domain's MX hosts;
- `tcp`: the connection and the server's greeting (and EHLO), per address tried;
- `tls`: STARTTLS by the connector's setting: "no TLS ... not required" when opportunistic and not
  offered; a refusal (4.4.317) or a certificate that fails validation (4.7.320) otherwise;
- `message`: the test message: the server's reply to it.

A step is listed once it was tried: a failure stops the steps after it. When several addresses are
tried, a step's result is its last attempt's and its detail names every attempt. A step that failed
carries its reply (`450 4.4.316 ...`); the result's `reply` is the recipient's final reply when the
message was not accepted. A disabled connector is validated as if enabled (validate, then enable:
spec §3.5). Connections are not cached: each recipient is validated on a connection of its own.

Nothing here writes: the caller records the results (the connector's validation history).

*Security:* the recipients are the administrator's input, parsed as addresses by the caller; every
reply comes from a remote server and is kept only as text, as `delivery.remote` keeps it.
"""

from __future__ import annotations

import asyncio
import email.policy
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.utils import formatdate

from postroom.config.settings import DeliverySettings
from postroom.delivery.remote import LocalEndpoints, RemoteDelivery, Trail
from postroom.dns.resolver import Resolver
from postroom.model.address import destination_of
from postroom.model.connectors import OutboundConnector, ValidationResult, ValidationStep
from postroom.model.outbound import DeliveryAttempt, OutboundMessage, OutboundRecipient

STEPS = ("dns", "tcp", "tls", "message")
SUBJECT = "Postroom connector validation"
MAX_HOPS = 30  # the test message carries no Received header; any bound will do


class _TestMessages:
    """The test messages by id: the agent reads bodies through this, as it reads the blob store."""

    def __init__(self) -> None:
        self._contents: dict[str, bytes] = {}

    def add(self, blob_id: str, content: bytes) -> None:
        self._contents[blob_id] = content

    def get(self, blob_id: str) -> bytes:
        return self._contents[blob_id]


async def validate_connector(
    connector: OutboundConnector,
    recipients: Sequence[str],
    *,
    settings: DeliverySettings,
    resolver: Resolver,
    helo_name: str,
    local: LocalEndpoints,
    sender: str,
    clock: Callable[[], float] = time.time,
) -> list[ValidationResult]:
    """Validate `connector` for each of `recipients` (see the module docstring), concurrently."""
    run = uuid.uuid4().hex
    enabled = replace(connector, enabled=True)
    messages = _TestMessages()
    agent = RemoteDelivery(
        replace(settings, connection_cache_seconds=0.0),
        resolver,
        messages,
        helo_name=helo_name,
        max_hops=MAX_HOPS,
        local=local,
        outbound_connector=lambda connector_id: enabled if connector_id == enabled.id else None,
    )

    async def one(index: int, recipient: str) -> ValidationResult:
        now = clock()
        blob_id = f"{run}-{index}"
        content = validation_message(connector, sender, recipient, f"{blob_id}@{helo_name}", now)
        messages.add(blob_id, content)
        outbound = OutboundMessage(blob_id, blob_id, b"", len(content), now, connector.tenant_id)
        attempt = DeliveryAttempt(
            destination_of(recipient),
            sender,
            outbound,
            (OutboundRecipient(index, recipient, recipient, 0),),
            connector.id,
        )
        trail = Trail()
        answered = await agent.deliver_traced([attempt], trail)
        reply = answered[0].reply
        steps = steps_of(trail)
        if not reply.is_positive and all(step.ok for step in steps):
            steps += (ValidationStep("message", False, f"not sent: {reply}", str(reply)),)
        ok = reply.is_positive
        return ValidationResult(connector.id, run, recipient, ok, "" if ok else str(reply), steps, clock())

    try:
        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(recipients))))
    finally:
        await agent.close()


def steps_of(trail: Trail) -> tuple[ValidationStep, ...]:
    """The trail's notes as one step each, in delivery order: the last attempt decides, every attempt
    is named."""
    steps = []
    for name in STEPS:
        notes = [note for note in trail.notes if note.step == name]
        if not notes:
            continue
        last = notes[-1]
        detail = "; ".join(dict.fromkeys(note.detail for note in notes))
        reply = "" if last.ok or last.reply is None else str(last.reply)
        steps.append(ValidationStep(name, last.ok, detail, reply))
    return tuple(steps)


def validation_message(
    connector: OutboundConnector, sender: str, recipient: str, message_id: str, now: float
) -> bytes:
    """The test message: from the tenant's postmaster to the recipient, saying what it is."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = SUBJECT
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = f"<{message_id}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Postroom-Connector"] = " ".join(connector.name.split())
    message.set_content(
        f"This message tests the outbound connector {connector.name!r} of your organization: it was "
        f"sent over the connector at {formatdate(now, usegmt=True)} to check that mail for {recipient} "
        "reaches its destination. You can delete it.\n"
    )
    return message.as_bytes()
