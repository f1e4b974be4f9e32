"""Categorizing: from the accepted RCPT recipients to one route per final recipient.

Aliases resolve to their recipient (a Resolve event); groups expand to their members, recursively
(an Expand event each), with loops guarded and nesting bounded by `MAX_GROUP_DEPTH`; contacts and
external group members route remote; an unknown member in one of the service's own domains fails.
Each final recipient is routed once per message, whichever path led to it: direct recipients are
routed first, then groups expand, and a member already routed is skipped (the Expand event still
lists it). Two RCPTs that name the same recipient (an alias and the primary address) share one
delivery, which settles both trace rows (`also_settles`).

Every outcome is typed: `Categorized.routes` to queue, `events` for trace, `statuses` for the trace
summary (a group's row is `expanded`, each route's row `pending`, a member that cannot be resolved
`failed` with its reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from postroom.directory import DirectoryView, RecipientKind
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
    routed: dict[str, int] = {}  # final recipient (address key) -> its index in result.routes
    trace_rows: set[str] = set()

    def status(tenant_id: int | None, recipient: str, value: TraceStatus) -> None:
        if recipient.lower() not in trace_rows:
            trace_rows.add(recipient.lower())
            result.statuses.append(TraceRecipient(message_id, tenant_id, recipient, value))

    def route(key: str, new: RoutedRecipient, direct: bool) -> None:
        """Route a final recipient once; a direct RCPT that repeats one shares its delivery."""
        index = routed.get(key)
        if index is None:
            routed[key] = len(result.routes)
            result.routes.append(new)
        elif direct and new.original_recipient.lower() not in trace_rows:
            first = result.routes[index]
            result.routes[index] = replace(first, also_settles=(*first.also_settles, new.original_recipient))
        else:
            return
        status(new.tenant_id, new.original_recipient, TraceStatus.PENDING)

    def route_remote(tenant_id: int | None, target: Address, row: str, direct: bool) -> None:
        route(target.key, RoutedRecipient(str(target), row, tenant_id, Route.REMOTE), direct)

    def visit(address: str, tenant_id: int | None, depth: int, groups: frozenset[int]) -> None:
        try:
            parsed = Address.parse(address)
        except AddressError:
            return
        direct = depth == 0
        owner = directory.address(parsed.key)
        if owner is None:
            domain = directory.domain(parsed.domain)
            if domain is not None:
                # One of our own domains: an unknown member is an error, never mail for the internet
                # (internal-relay domains will relay it through their on-premises connector).
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
            route_remote(tenant_id, parsed, address, direct)
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
            local = RoutedRecipient(
                owner.primary_address, address, owner.tenant_id, Route.LOCAL, owner.recipient_id
            )
            route(Address.parse(owner.primary_address).key, local, direct)
        elif owner.kind is RecipientKind.CONTACT:
            target = Address.parse(owner.external_address) if owner.external_address else parsed
            route_remote(owner.tenant_id, target, address, direct)
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
