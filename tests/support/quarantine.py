"""Quarantined messages for tests: what the MX commit does when protection holds a message.

`held` stores the body, records the message's trace and holds it for one tenant's recipients in one
transaction (`quarantine.hold`, its trace rows recorded with the rest), as the receiving commit does.
"""

from __future__ import annotations

from sqlalchemy import select

from postroom.model.message import summarize
from postroom.model.policy import ADMIN_ONLY, FULL_ACCESS
from postroom.quarantine import ADMIN_ONLY_REASONS, Hold, hold
from postroom.queue import new_message_id
from postroom.storage import BlobStore, Database
from postroom.storage.schema import quarantine
from postroom.trace import TraceMessage, record_events, record_message, set_statuses

SPAM = (
    b"From: Prize Desk <win@prizes.example>\r\nTo: alice@contoso.com\r\nSubject: You won\r\n"
    b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\nMessage-ID: <won-1@prizes.example>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nClaim your prize today.\r\n"
)
PREFIX = (
    b"Authentication-Results: mx.postroom.test; spf=fail smtp.mailfrom=prizes.example\r\n"
    b"X-Postroom-Antispam-Report: CIP:192.0.2.7;CTRY:;LANG:en;SCL:9;SRV:;IPV:NLI;SFV:SPM;\r\n"
    b" PTR:;CAT:HSPM;DIR:INB;\r\n"
    b"X-Postroom-Antispam: BCL:0;\r\n"
    b"Received: from client.prizes.example ([192.0.2.7]) by mx.postroom.test\r\n"
)


def held(
    database: Database,
    blobs: BlobStore,
    tenant_id: int,
    recipients: list[tuple[str, int | None]],
    *,
    reason: str = "high-confidence-spam",
    access: str | None = None,
    content: bytes = SPAM,
    prefix: bytes = PREFIX,
    sender: str = "win@prizes.example",
    at: float = 1000.0,
    retention_days: int = 30,
    message_id: str | None = None,
) -> int:
    """Hold `content` for `recipients` of one tenant, as the receiving commit does; its quarantine id."""
    message_id = message_id or new_message_id(at)
    summary = summarize(content)
    if access is None:
        access = ADMIN_ONLY if reason in ADMIN_ONLY_REASONS else FULL_ACCESS
    item = Hold(
        message_id=message_id,
        tenant_id=tenant_id,
        blob_id=blobs.put(content),
        prefix=prefix,
        size=len(prefix) + len(content),
        sender=sender,
        from_header=summary.from_header,
        subject=summary.subject,
        message_id_header=summary.message_id,
        reason=reason,
        policy="Default",
        access=access,
        detail={"spam": {"scl": 9, "engine": "builtin"}, "auth": {"dmarc": "fail"}},
        received_at=at,
        retention_days=retention_days,
        recipients=tuple(recipients),
    )
    with database.write() as conn:
        record_message(
            conn,
            TraceMessage(message_id, summary.message_id, sender, summary.subject, item.size, "192.0.2.7", at),
        )
        events, statuses = hold(conn, item)
        record_events(conn, events, at)
        set_statuses(conn, statuses, at)
        q = quarantine
        found = conn.execute(
            select(q.c.id).where((q.c.message_id == message_id) & (q.c.tenant_id == tenant_id))
        ).scalar_one()
    return int(found)
