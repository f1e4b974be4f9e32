"""Categorizing: from the accepted RCPT recipients to one route per final recipient.

Aliases resolve to their recipient (a Resolve event); groups expand to their members, recursively
(an Expand event each), with loops guarded and nesting bounded by `MAX_GROUP_DEPTH`; contacts and
external group members route remote. Each final recipient appears once per message, whichever path
led to it: direct recipients are routed first, then groups expand, and a member already routed is
skipped (the Expand event still lists it).

Every outcome is typed: `Categorized.routes` to queue, `events` for trace, `statuses` for the trace
summary (a group's row is `expanded`, each route's row `pending`, a member that cannot be resolved
`failed` with its reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postroom.directory import DirectoryView, DomainStatus, DomainType, RecipientKind
from postroom.model import Address, AddressError
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.routing.resolve import Accepted

MAX_GROUP_DEPTH = 10


@dataclass(slots=True)
class Categorized:
    routes: list[RoutedRecipient] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)
    statuses: list[TraceRecipient] = field(default_factory=list)


def categorize(directory: DirectoryView, message_id: str, accepted: list[Accepted]) -> Categorized:
    result = Categorized()
    seen: set[str] = set()  # final recipients already routed, by address key
    trace_rows: set[str] = set()

    def status(tenant_id: int | None, recipient: str, value: TraceStatus) -> None:
        if recipient.lower() not in trace_rows:
            trace_rows.add(recipient.lower())
            result.statuses.append(TraceRecipient(message_id, tenant_id, recipient, value))

    def route_remote(tenant_id: int | None, target: str, row: str) -> None:
        key = target.lower()
        if key in seen:
            return
        seen.add(key)
        result.routes.append(RoutedRecipient(target, row, tenant_id, Route.REMOTE))
        status(tenant_id, row, TraceStatus.PENDING)

    def visit(address: str, tenant_id: int | None, depth: int, groups: frozenset[int]) -> None:
        try:
            parsed = Address.parse(address)
        except AddressError:
            return
        owner = directory.address(parsed.key)
        if owner is None:
            domain = directory.domain(parsed.domain)
            if (
                domain is not None
                and domain.status is DomainStatus.VERIFIED
                and domain.type is DomainType.AUTHORITATIVE
            ):
                result.events.append(
                    TraceEvent(
                        message_id,
                        EventKind.FAIL,
                        domain.tenant_id,
                        address,
                        {"reply": "550 5.1.1 Recipient not found"},
                    )
                )
                status(domain.tenant_id, address, TraceStatus.FAILED)
                return
            route_remote(tenant_id, str(parsed), address)
            return
        if owner.primary_address.lower() != address.lower():
            result.events.append(
                TraceEvent(
                    message_id,
                    EventKind.RESOLVE,
                    owner.tenant_id,
                    address,
                    {"resolved_to": owner.primary_address},
                )
            )
        if owner.kind is RecipientKind.MAILBOX:
            primary_key = Address.parse(owner.primary_address).key
            if primary_key in seen:
                return
            seen.add(primary_key)
            result.routes.append(
                RoutedRecipient(
                    owner.primary_address, address, owner.tenant_id, Route.LOCAL, owner.recipient_id
                )
            )
            status(owner.tenant_id, address, TraceStatus.PENDING)
        elif owner.kind is RecipientKind.CONTACT:
            route_remote(owner.tenant_id, owner.external_address or address, address)
        else:
            if owner.recipient_id in groups or depth >= MAX_GROUP_DEPTH:
                result.events.append(
                    TraceEvent(
                        message_id,
                        EventKind.EXPAND,
                        owner.tenant_id,
                        address,
                        {"skipped": "group loop" if owner.recipient_id in groups else "nesting too deep"},
                    )
                )
                return
            members = directory.members(owner.recipient_id)
            result.events.append(
                TraceEvent(message_id, EventKind.EXPAND, owner.tenant_id, address, {"members": members})
            )
            status(owner.tenant_id, address, TraceStatus.EXPANDED)
            for member in members:
                visit(member, owner.tenant_id, depth + 1, groups | {owner.recipient_id})

    # Direct recipients first, so each RCPT keeps its own trace row when a group repeats it.
    for item in sorted(accepted, key=lambda a: a.owner.kind is RecipientKind.GROUP):
        visit(str(item.recipient), item.owner.tenant_id, 0, frozenset())
    return result
