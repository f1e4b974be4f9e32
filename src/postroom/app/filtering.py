"""Protection in the receiving flow: a message's `Inspection` applied to its routes.

The MX and submission sessions call `Protection.inspect` at the end of DATA, after categorizing (so
each final recipient gets its own policy) and before the commit; `apply_inspection` turns the
inspection into what the commit does: routes that go on (with their protection headers and
folder, or failed by a reject: the queue's DSN round tells the sender), copies held in quarantine,
copies deleted, copies to redirect, and the trace of every verdict and action. When every recipient
rejects, the message is refused at DATA instead (no NDR to a possibly forged sender).

Trace: one `Filter` event per tenant with the message's verdicts (authentication, malware, SCL,
BCL, engine) and the count of each action, and one per recipient whose copy was not simply
delivered to the Inbox; deleted copies are `filtered-as-spam`, held ones `quarantined` (written
by the quarantine), copies in Junk `filtered-as-spam` (written by local delivery).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

from sqlalchemy import Connection

from postroom.app.sending import authserv_id
from postroom.config import Settings
from postroom.dns import Resolver, verified_ptr
from postroom.model import Reply
from postroom.model.flow import EventKind, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.model.verdicts import FilterAction, FilterVerdict, SpfVerdict
from postroom.protection.authentication import Authenticator, strip_foreign
from postroom.protection.malware import (
    ArchiveLimits,
    BuiltinMalwareEngine,
    ClamdEngine,
    MalwareEngine,
    attachment_filter,
)
from postroom.protection.mime import MimeLimits
from postroom.protection.pipeline import MALWARE_REJECTED, Disposition, Inspection, Protection
from postroom.protection.spam import BuiltinSpamEngine, LearnedStore, RspamdEngine, SpamEngine
from postroom.protection.spf import check_spf
from postroom.quarantine import Hold, hold
from postroom.queue import SpoolEntry


@dataclass(frozen=True, slots=True)
class Held:
    """A recipient's copy that goes into quarantine instead of its mailbox."""

    route: RoutedRecipient
    disposition: Disposition


@dataclass(slots=True)
class Filtered:
    routes: list[RoutedRecipient]  # delivered, queued, or failed by a reject
    held: list[Held] = field(default_factory=list)
    redirects: list[tuple[RoutedRecipient, str]] = field(default_factory=list)  # route, address
    events: list[TraceEvent] = field(default_factory=list)
    statuses: list[TraceRecipient] = field(default_factory=list)
    refusal: Reply | None = None  # every recipient rejected: refuse the message at DATA with this
    subject_prefixes: dict[int, str] = field(default_factory=dict)  # index in `routes`: its prefix
    detail: dict[str, object] = field(default_factory=dict)  # the message's verdicts (quarantine keeps them)


def apply_inspection(message_id: str, inspection: Inspection, routes: list[RoutedRecipient]) -> Filtered:
    """What becomes of each route under its disposition (`inspection.dispositions[i]` is `routes[i]`'s)."""
    filtered = Filtered(routes=[], detail=dict(inspection.detail))
    actions: dict[int | None, Counter[str]] = {}
    rejected: list[Reply] = []
    for route, disposition in zip(routes, inspection.dispositions, strict=True):
        actions.setdefault(route.tenant_id, Counter())[disposition.action.value] += 1
        if route.failure:  # failed while routed (too big for the mailbox): its DSN says so already
            filtered.routes.append(route)
            continue
        if disposition.action is not FilterAction.INBOX or disposition.verdict is not FilterVerdict.CLEAN:
            filtered.events += [
                TraceEvent(message_id, EventKind.FILTER, route.tenant_id, row, _recipient_detail(disposition))
                for row in route.trace_rows
            ]
        action = disposition.action
        if action is FilterAction.QUARANTINE and route.tenant_id is None:
            # A recipient of no tenant (the service's postmaster): no one could release a held copy,
            # so it is refused instead (an NDR), never held forever or retried forever.
            action = FilterAction.REJECT
            disposition = replace(disposition, reply=MALWARE_REJECTED)
        if action is FilterAction.QUARANTINE:
            filtered.held.append(Held(replace(route, headers=disposition.headers), disposition))
        elif action is FilterAction.DELETE:
            filtered.statuses += [
                TraceRecipient(
                    message_id, route.tenant_id, row, TraceStatus.FILTERED_AS_SPAM, route.recipient
                )
                for row in route.trace_rows
            ]
        elif action is FilterAction.REJECT:
            reply = disposition.reply
            assert reply is not None, "a reject disposition carries its reply"
            rejected.append(reply)
            filtered.routes.append(replace(route, failure=str(reply), headers=disposition.headers))
        elif action is FilterAction.REDIRECT:
            filtered.redirects.append((replace(route, headers=disposition.headers), disposition.redirect_to))
        else:
            if disposition.subject_prefix:
                filtered.subject_prefixes[len(filtered.routes)] = disposition.subject_prefix
            filtered.routes.append(replace(route, headers=disposition.headers, folder=disposition.folder))
    live = [d for r, d in zip(routes, inspection.dispositions, strict=True) if not r.failure]
    if live and len(rejected) == len(live):
        filtered.refusal = rejected[0]
    for tenant_id, counts in actions.items():
        detail = {**inspection.detail, "actions": dict(sorted(counts.items()))}
        filtered.events.insert(0, TraceEvent(message_id, EventKind.FILTER, tenant_id, "", detail))
    return filtered


def _recipient_detail(disposition: Disposition) -> dict[str, object]:
    detail: dict[str, object] = {
        "verdict": disposition.verdict.name.lower().replace("_", "-"),
        "action": disposition.action.value,
        "scl": disposition.scl,
        "sfv": disposition.sfv,
    }
    if disposition.policy:
        detail["policy"] = disposition.policy
    if disposition.reply is not None:
        detail["reply"] = str(disposition.reply)
    if disposition.redirect_to:
        detail["redirect_to"] = disposition.redirect_to
    if disposition.quarantine_reason:
        detail["reason"] = disposition.quarantine_reason
    return detail


_SUBJECT = re.compile(rb"^Subject:[ \t]?", re.IGNORECASE | re.MULTILINE)


def prepend_subject(message: bytes, text: str) -> bytes:
    """`message` with `text` put before its Subject (one is added when it has none); only the header
    block is touched. An encoded-word subject keeps its encoding after the plain text."""
    end = message.find(b"\r\n\r\n")
    head_end = end + 2 if end >= 0 else len(message)
    head, rest = message[:head_end], message[head_end:]
    prefix = text.encode("utf-8", "replace")
    found = _SUBJECT.search(head)
    if found is None:
        return b"Subject: " + prefix.rstrip() + b"\r\n" + head + rest
    return head[: found.end()] + prefix + head[found.end() :] + rest


def hold_copies(
    conn: Connection, entry: SpoolEntry, held: list[Held], detail: Mapping[str, object] | None = None
) -> tuple[list[TraceEvent], list[TraceRecipient]]:
    """Put the held copies into quarantine in the commit's transaction; their trace rows.

    One quarantine row per tenant (`quarantine.hold`) with each copy's recipient as given and its
    mailbox, the first copy's protection headers above the node's prefix, the message's verdicts
    (`detail`) and the disposition's; the longest retention of the tenant's copies. A copy of no
    tenant cannot be held (no one could release it): the commit fails and the sender retries."""
    events: list[TraceEvent] = []
    statuses: list[TraceRecipient] = []
    by_tenant: dict[int, list[Held]] = {}
    for copy in held:
        if copy.route.tenant_id is None:
            raise ValueError(
                f"protection held the copy for {copy.route.recipient}, which belongs to no tenant"
            )
        by_tenant.setdefault(copy.route.tenant_id, []).append(copy)
    for tenant_id, copies in by_tenant.items():
        first = copies[0]
        headers = first.route.headers
        verdicts: dict[str, object] = {
            **(detail or {}),
            "verdict": first.disposition.verdict.name.lower().replace("_", "-"),
            "scl": first.disposition.scl,
            "sfv": first.disposition.sfv,
        }
        held_events, held_statuses = hold(
            conn,
            Hold(
                message_id=entry.id,
                tenant_id=tenant_id,
                blob_id=entry.blob_id,
                prefix=headers + entry.prefix,
                size=entry.size + len(headers),
                sender=entry.sender,
                from_header=entry.summary.from_header,
                subject=entry.summary.subject,
                message_id_header=entry.summary.message_id,
                reason=first.disposition.quarantine_reason,
                policy=first.disposition.policy,
                access=first.disposition.access,
                detail=verdicts,
                received_at=entry.received_at,
                retention_days=max(c.disposition.retention_days for c in copies),
                recipients=tuple((c.route.original_recipient, c.route.mailbox_id) for c in copies),
            ),
        )
        events += held_events
        statuses += held_statuses
        statuses += [  # the other RCPT rows the same copy settles
            TraceRecipient(entry.id, tenant_id, row, TraceStatus.QUARANTINED, c.route.recipient)
            for c in copies
            for row in c.route.also_settles
        ]
    return events, statuses


def build_protection(settings: Settings, resolver: Resolver) -> Protection | None:
    """The node's filtering stack from `[protection]` (None when it is off): the built-in engines for
    the embedded default, Rspamd and clamd when the settings name them."""
    protection = settings.protection
    if not protection.enabled:
        return None
    receiver = settings.service.hostname
    server_id = authserv_id(settings)

    async def spf(client_ip: str, mail_from: str, helo: str) -> SpfVerdict:
        return await check_spf(resolver, client_ip, mail_from, helo, receiver=receiver)

    async def reverse(client_ip: str) -> str:
        return await verified_ptr(resolver, client_ip)

    malware: MalwareEngine
    if protection.malware_engine == "clamd":
        malware = ClamdEngine(
            protection.clamd_socket, timeout=protection.engine_timeout, max_stream=protection.clamd_max_stream
        )
    else:
        malware = BuiltinMalwareEngine()
    spam = spam_engine(settings)
    limits = ArchiveLimits(
        protection.max_archive_depth, protection.max_archive_members, protection.max_archive_octets
    )
    return Protection(
        authserv_id=server_id,
        spf=spf,
        authentication=Authenticator(resolver, server_id),
        malware=malware,
        spam=spam,
        attachments=partial(attachment_filter, limits=limits),
        strip=strip_foreign,
        mime_limits=MimeLimits(max_depth=protection.max_mime_depth, max_parts=protection.max_mime_parts),
        deliver_unscanned=protection.engine_unavailable == "deliver",
        engine_timeout=protection.engine_timeout,
        reverse=reverse,
    )


def spam_engine(settings: Settings) -> SpamEngine:
    """The spam engine `[protection] spam_engine` names: Rspamd, or the built-in scorer (whose junk and
    not-junk reports live in the data directory, shared by the node's processes)."""
    protection = settings.protection
    if protection.spam_engine == "rspamd":
        return RspamdEngine(
            protection.rspamd_url,
            protection.rspamd_controller_url,
            password=protection.rspamd_password,
            timeout=protection.engine_timeout,
        )
    store = LearnedStore(settings.data_dir / "spam-reports.json")
    return BuiltinSpamEngine(hostnames=(settings.service.hostname,), store=store)


def spam_learner(settings: Settings) -> Callable[[bytes, bool], Awaitable[None]]:
    """How a false-positive report (a quarantine release) or a junk report trains the spam engine."""

    async def learn(message: bytes, spam: bool) -> None:
        engine = spam_engine(settings)
        try:
            await engine.learn(message, spam=spam)
        finally:
            await engine.aclose()

    return learn
