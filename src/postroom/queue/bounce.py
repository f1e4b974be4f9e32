"""Bounces: delivery status notifications (RFC 3464, in an RFC 3462 multipart/report) for the sender.

The DSN round (`report_failures`, a writer job) takes queue rows in state `failed` and writes one DSN
per message, tenant and return path, naming all of those failed recipients together; then it settles
the rows (they leave the queue) and returns a DSN trace event per recipient, in the same job: a
failure is reported exactly once, and after a crash either both happened or neither. The delay round
(`report_delays`) does the same, once per recipient, for rows still `deferred` `delay_notification`
seconds after receipt (`Action: delayed`, the row keeps waiting and is marked `delay_notified`).

A DSN has three parts: a readable text part in the style of the reference's NDRs (spec §12.2: what
happened, who should fix it, how, and the details for administrators), `message/delivery-status`
(Reporting-MTA, Arrival-Date; per recipient Original-Recipient, Final-Recipient, Action, Status,
Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until when delayed) and
`text/rfc822-headers` with the original message's header section (the node's prefix, then the blob's
head; at most `RETURNED_HEADERS_MAX` octets). It comes from the sending tenant's external postmaster
address (`Reporter.postmaster_for`, spec §9), with the null envelope sender `<>`, to the return path
(the row's envelope sender, e.g. an SRS address, else the message's sender). The DSN is handed to
`Reporter.submit_generated` in the same job, which routes it like any message (the app does).

Never a DSN to the null sender; never a DSN for a DSN (a message whose header says
`multipart/report; report-type=delivery-status`, or whose `Auto-Submitted` is other than `no`,
RFC 3834); never one to a domain whose remote domain setting refuses NDRs (`Reporter.ndr_allowed`).
The rows of a suppressed DSN are settled all the same, with a DSN event saying why none was sent.

Security: the original headers and the remote replies are untrusted. Replies are reduced to
printable ASCII on one line before they enter a DSN field; the headers are returned as an opaque
`text/rfc822-headers` body (CRLF lines, bounded) and only read here to detect reports.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.header import Header
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from postroom.model import replies
from postroom.model.flow import EventKind, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.message import header_section
from postroom.queue.leases import TraceRows
from postroom.queue.spool import QueueState, new_message_id, settle
from postroom.storage import BlobMissingError, BlobStore
from postroom.storage.schema import queue_recipients, spool_messages

RETURNED_HEADERS_MAX = 65_536  # octets of the original header section a DSN carries
REPORT_BATCH = 200  # rows one DSN round takes at most
_FIELD_MAX = 900  # octets of one delivery-status field value (lines stay under RFC 5322's 998)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """A message the node writes itself (a DSN): one recipient, null envelope sender."""

    id: str  # its own internal message id (its trace id)
    tenant_id: int | None  # whose postmaster sends it
    sender: str  # the envelope sender: "" for <>
    recipient: str  # RCPT TO
    content: bytes  # the whole message, CRLF lines
    regarding: str  # the internal id of the message it reports on
    created_at: float


GeneratedSink = Callable[[Connection, GeneratedMessage], None]


def always_allowed(tenant_id: int | None, domain: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Reporter:
    """What the DSN rounds need from the node."""

    reporting_mta: str  # the node's host name (Reporting-MTA: dns; ...)
    postmaster_for: Callable[[int | None], str]  # the From of a tenant's DSNs (spec §9)
    submit_generated: GeneratedSink  # routes and stores a DSN, in the caller's transaction
    blobs: BlobStore  # where the original headers are read
    ndr_allowed: Callable[[int | None, str], bool] = always_allowed  # (tenant, return path domain)


@dataclass(frozen=True, slots=True)
class _Failed:
    queue_id: int
    tenant_id: int | None
    recipient: str
    original_recipient: str
    trace_rows: tuple[str, ...]
    reply: str
    remote_mta: str
    last_attempt_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _Report:
    message_id: str
    tenant_id: int | None
    return_path: str
    message_sender: str
    blob_id: str
    prefix: bytes
    received_at: float
    subject: str
    message_id_header: str
    recipients: tuple[_Failed, ...]


def report_failures(conn: Connection, now: float, reporter: Reporter, batch: int = REPORT_BATCH) -> TraceRows:
    """Send one DSN per failed message (and tenant, return path); settle its failed rows."""
    reports = _reports(conn, QueueState.FAILED, None, batch)
    trace = TraceRows()
    for report in reports:
        trace.extend(_report(conn, report, "failed", now, reporter))
        settle(conn, {r.queue_id for r in report.recipients})
    return trace


def report_delays(
    conn: Connection, now: float, reporter: Reporter, delay: float, batch: int = REPORT_BATCH
) -> TraceRows:
    """Send one `delayed` DSN for each message still deferred `delay` seconds after receipt."""
    reports = _reports(conn, QueueState.DEFERRED, now - delay, batch)
    trace = TraceRows()
    for report in reports:
        trace.extend(_report(conn, report, "delayed", now, reporter))
        ids = [r.queue_id for r in report.recipients]
        q = queue_recipients
        conn.execute(update(q).where(q.c.id.in_(ids)).values(delay_notified=True))
    return trace


def _reports(conn: Connection, state: QueueState, received_before: float | None, batch: int) -> list[_Report]:
    q, m = queue_recipients, spool_messages
    query = (
        select(q, m.c.sender, m.c.blob_id, m.c.prefix, m.c.subject, m.c.message_id_header)
        .join(m, m.c.id == q.c.message_id)
        .where(q.c.state == state.value)
    )
    order = [q.c.id]
    if received_before is not None:
        # Delay notices: rows nobody delivers now (a leased row may be settling this very moment),
        # oldest first: the order of `ix_queue_delay_unnotified`, so the read stops at the cut-off
        # (ordered by id, the planner walked the whole queue hoping to meet an old row early).
        query = query.where(
            (q.c.received_at <= received_before) & q.c.delay_notified.is_(False) & q.c.lease_owner.is_(None)
        )
        order = [q.c.received_at, q.c.id]
    rows = conn.execute(query.order_by(*order).limit(batch)).all()
    grouped: dict[tuple[str, int | None, str], list[Row[Any]]] = {}
    for row in rows:
        return_path = row.sender if row.envelope_sender is None else row.envelope_sender
        grouped.setdefault((row.message_id, row.tenant_id, return_path), []).append(row)
    reports = []
    for (message_id, tenant_id, return_path), members in grouped.items():
        first = members[0]
        reports.append(
            _Report(
                message_id=message_id,
                tenant_id=tenant_id,
                return_path=return_path,
                message_sender=first.sender,
                blob_id=first.blob_id,
                prefix=bytes(first.prefix),
                received_at=first.received_at,
                subject=first.subject,
                message_id_header=first.message_id_header,
                recipients=tuple(
                    _Failed(
                        queue_id=r.id,
                        tenant_id=r.tenant_id,
                        recipient=r.recipient,
                        original_recipient=r.original_recipient,
                        trace_rows=(
                            r.original_recipient,
                            *(a for a in r.also_settles.split("\n") if a),
                        ),
                        reply=r.last_reply,
                        remote_mta=r.remote_mta,
                        last_attempt_at=r.last_attempt_at,
                        expires_at=r.expires_at,
                    )
                    for r in members
                ),
            )
        )
    return reports


def _report(conn: Connection, report: _Report, action: str, now: float, reporter: Reporter) -> TraceRows:
    """Write (or suppress) one DSN; returns its trace rows."""
    headers = _original_headers(reporter.blobs, report)
    domain = report.return_path.rpartition("@")[2].lower()
    suppressed = ""
    if not report.return_path:
        suppressed = "the sender is the null sender <>"
    elif is_report_or_auto_submitted(headers):
        suppressed = "the message is itself a report or auto-submitted"
    elif not reporter.ndr_allowed(report.tenant_id, domain):
        suppressed = f"non-delivery reports to {domain} are not allowed (remote domain setting)"
    detail: dict[str, object] = {"action": action, "to": report.return_path}
    if suppressed:
        detail["suppressed"] = suppressed
    else:
        dsn_id = new_message_id(now)
        content = build_dsn(report, action, headers, now, reporter, dsn_id)
        reporter.submit_generated(
            conn,
            GeneratedMessage(
                dsn_id, report.tenant_id, "", report.return_path, content, report.message_id, now
            ),
        )
        detail["dsn"] = dsn_id
    rows = TraceRows()
    for failed in report.recipients:
        for row in failed.trace_rows:
            rows.events.append(TraceEvent(report.message_id, EventKind.DSN, failed.tenant_id, row, detail))
            if action == "failed":
                rows.statuses.append(
                    TraceRecipient(
                        report.message_id, failed.tenant_id, row, TraceStatus.FAILED, failed.recipient
                    )
                )
    return rows


def _original_headers(blobs: BlobStore, report: _Report) -> bytes:
    try:
        head = blobs.head(report.blob_id, RETURNED_HEADERS_MAX)
    except (BlobMissingError, OSError):
        head = b""
    section = header_section(report.prefix + head)
    if len(section) > RETURNED_HEADERS_MAX:
        section = section[: section.rfind(b"\r\n", 0, RETURNED_HEADERS_MAX) + 2]
    return section


def is_report_or_auto_submitted(headers: bytes) -> bool:
    """True for a delivery report (RFC 3464) or an automatic message (RFC 3834 Auto-Submitted)."""
    parsed = BytesHeaderParser().parsebytes(headers)
    if parsed.get_content_type() == "multipart/report":
        report_type = parsed.get_param("report-type", header="content-type")
        if isinstance(report_type, str) and report_type.lower() == "delivery-status":
            return True
    auto = parsed.get("auto-submitted")
    return auto is not None and str(auto).split(";")[0].strip().lower() not in ("", "no")


def _ascii(text: str, limit: int = _FIELD_MAX) -> str:
    return _UNPRINTABLE.sub("?", " ".join(text.split()))[:limit]


def _address_field(address: str) -> str:
    if address.isascii():
        return f"rfc822; {_ascii(address)}"
    # RFC 6533 utf-8-addr-xtext: non-ASCII as \x{HEX}
    return "utf-8; " + "".join(ch if 0x20 < ord(ch) < 0x7F else f"\\x{{{ord(ch):X}}}" for ch in address)


def _date(at: float) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(at, datetime.UTC))


_STATUS = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")


def status_of(reply: str, action: str) -> str:
    """The RFC 3463 status of a stored reply ("550 5.1.1 ..."): its enhanced code, else by class."""
    found = _STATUS.match(reply)
    if found:
        return found.group(1)
    return "4.0.0" if action == "delayed" or reply.startswith("4") else "5.0.0"


# Outbound connector failures (spec §3.6), which fail with their own code after 24 hours of retries.
CONNECTOR_STATUSES = frozenset(
    str(reply.enhanced)
    for reply in (
        replies.CONNECTOR_DNS_FAILED,
        replies.CONNECTOR_TIMEOUT,
        replies.CONNECTOR_REFUSED,
        replies.CONNECTOR_CANNOT_CONNECT,
        replies.CONNECTOR_CLOSED,
        replies.CONNECTOR_CERTIFICATE_FAILED,
    )
)


@dataclass(frozen=True, slots=True)
class _Advice:
    what: str
    who: str
    how: str


def advice(status: str, action: str) -> _Advice:
    """What the readable part says, by status (spec §12.2's NDR shape)."""
    if action == "delayed":
        return _Advice(
            "Delivery has been delayed: the destination has not accepted the message yet. It is "
            "being retried; you don't need to do anything now.",
            "The recipient's email administrator, if it goes on.",
            "If you get a non-delivery report later, send the message again, or reach the recipient "
            "another way.",
        )
    if status == "4.4.7":
        return _Advice(
            "The message expired: the destination server could not be reached, or kept refusing it "
            "for a while, until the retries ran out.",
            "The recipient's email administrator.",
            "Try again later, or ask the recipient's administrator to check their mail server.",
        )
    if status in CONNECTOR_STATUSES:
        return _Advice(
            "The message was to leave over a connector of your organization (to its own servers or a "
            "partner's), and the connector's destination could not take it for a day of retries: "
            "it was not found in DNS, did not answer, refused the connection, did not offer the TLS "
            "the connector requires, or presented a certificate that failed validation.",
            "Your email administrator.",
            "Forward this report to your email administrator; `postroom connector validate` tests the "
            "connector step by step.",
        )
    if status.startswith("5.1."):
        return _Advice(
            "The recipient's address doesn't exist, or the destination refused it.",
            "You, the sender.",
            "Check the address for typos and send the message again, or contact the recipient another way.",
        )
    if status == "5.7.520":
        return _Advice(
            "Your organization does not allow this message to be forwarded outside it.",
            "Your email administrator.",
            "Ask your administrator about the outbound forwarding policy.",
        )
    if status.startswith("5.7."):
        return _Advice(
            "The destination refused the message for a policy or security reason.",
            "The recipient's email administrator, or yours.",
            "Forward this report to your email administrator; the details below say what the "
            "destination answered.",
        )
    if status.startswith("5.2.") or status.startswith("5.3.4"):
        return _Advice(
            "The message is too large, or the recipient's mailbox is full.",
            "You, the sender, or the recipient.",
            "Send a smaller message (fewer or smaller attachments), or ask the recipient to make room.",
        )
    if status.startswith("5.4."):
        return _Advice(
            "The message could not be routed to the destination (no mail server, or a mail loop).",
            "The recipient's email administrator.",
            "Check the recipient's domain name; if it is right, its administrator must fix its mail records.",
        )
    return _Advice(
        "The destination server refused the message.",
        "The recipient's email administrator.",
        "Forward this report to your email administrator; the details below say what the "
        "destination answered.",
    )


def build_dsn(
    report: _Report, action: str, headers: bytes, now: float, reporter: Reporter, dsn_id: str
) -> bytes:
    """The DSN as octets: RFC 5322 header, multipart/report with its three parts."""
    boundary = f"=_dsn_{dsn_id}"
    postmaster = reporter.postmaster_for(report.tenant_id)
    subject_prefix = "Undeliverable" if action == "failed" else "Delivery delayed"
    subject = f"{subject_prefix}: {' '.join(report.subject.split())}".strip()
    encoded_subject = subject if subject.isascii() else Header(subject, "utf-8").encode()
    head = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{_ascii(report.return_path, 320) if report.return_path.isascii() else report.return_path}>",
        f"Subject: {encoded_subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{dsn_id}@{reporter.reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    original_id = _ascii(report.message_id_header, 500)
    if original_id.startswith("<") and original_id.endswith(">"):
        head += [f"In-Reply-To: {original_id}", f"References: {original_id}"]

    text = _readable(report, action)
    status_fields = [
        f"Reporting-MTA: dns; {reporter.reporting_mta}",
        f"X-Postroom-Queue-ID: {report.message_id}",
        f"Arrival-Date: {_date(report.received_at)}",
        "",
    ]
    for failed in report.recipients:
        status = status_of(failed.reply, action)
        status_fields.append(f"Original-Recipient: {_address_field(failed.original_recipient)}")
        status_fields.append(f"Final-Recipient: {_address_field(failed.recipient)}")
        status_fields.append(f"Action: {action}")
        status_fields.append(f"Status: {status}")
        if failed.remote_mta:
            status_fields.append(f"Remote-MTA: dns; {_ascii(failed.remote_mta, 255)}")
        if failed.reply:
            status_fields.append(f"Diagnostic-Code: smtp; {_ascii(failed.reply)}")
        if failed.last_attempt_at is not None:
            status_fields.append(f"Last-Attempt-Date: {_date(failed.last_attempt_at)}")
        if action == "delayed" and failed.expires_at is not None:
            status_fields.append(f"Will-Retry-Until: {_date(failed.expires_at)}")
        status_fields.append("")

    parts = [
        "\r\n".join(head),
        "",
        "This is a delivery status notification in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "\r\n".join(status_fields),
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    body = "\r\n".join(parts).encode("utf-8") + b"\r\n"
    returned = headers if headers.endswith(b"\r\n") or not headers else headers + b"\r\n"
    return body + returned + f"\r\n--{boundary}--\r\n".encode()


def _readable(report: _Report, action: str) -> str:
    """The text part: one block per recipient, then the details for administrators."""
    lines: list[str] = []
    if action == "failed":
        lines.append("Your message couldn't be delivered to these recipients:")
    else:
        lines.append("Your message hasn't been delivered to these recipients yet:")
    lines.append("")
    for failed in report.recipients:
        status = status_of(failed.reply, action)
        guide = advice(status, action)
        lines += [
            f"  {failed.original_recipient}",
            "",
            f"What happened: {guide.what}",
            f"Who should fix it: {guide.who}",
            f"How to fix it: {guide.how}",
            "",
        ]
    lines.append("More information for administrators:")
    lines.append("")
    for failed in report.recipients:
        lines.append(f"  Recipient: {failed.recipient}")
        lines.append(f"  Status: {status_of(failed.reply, action)}")
        if failed.remote_mta:
            lines.append(f"  Remote server: {_ascii(failed.remote_mta, 255)}")
        if failed.reply:
            lines.append(f"  Reply: {_ascii(failed.reply)}")
        lines.append("")
    lines.append(f"  Original message: {report.message_id}, sent {_date(report.received_at)}")
    if report.subject:
        lines.append(f"  Subject: {' '.join(report.subject.split())}")
    return "\r\n".join(lines)
