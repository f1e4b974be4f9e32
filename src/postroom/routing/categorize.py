"""Categorizing: from the accepted RCPT recipients to one route per final recipient.

Aliases resolve to their recipient (a Resolve event); groups expand to their members, breadth
first (an Expand event each). Each group is expanded **once per message**, whichever paths lead to
it, so a diamond or lattice of nested groups costs one Expand per group, never one per path; a group
met again on its own path is a loop (an Expand event that says it was skipped), and nesting is
bounded by `MAX_GROUP_DEPTH`. Each final recipient is routed once per message: direct recipients
are routed first, then groups expand, and a member already routed is skipped (the Expand event
still lists it). Two RCPTs that name the same recipient (an alias and the primary address) share
one delivery, which settles both trace rows (`also_settles`).

The number of final recipients of one message is bounded by `max_recipients` (the setting
`[routing] max_expanded_recipients`): recipients past it are not routed; they fail with
`550 5.5.3` in one Fail event that names the limit and carries their count and a sample (one event,
not a row each, so a huge group cannot make one message write without bound). The rest are routed.

Whose mail it is: a recipient named in RCPT is the mail of the tenant that owns the address; a
group member is the mail of the group's tenant. Another tenant is a remote organization: a member
whose address belongs to another tenant (or lies in another tenant's domain) routes remote, exactly
as if an outside sender had addressed it, and its trace row, events and route belong to the group's
tenant. An unknown member in one of the group's own tenant's domains fails (5.1.1), never mail for
the internet (internal-relay domains will relay it through their on-premises connector).

**Forwarding** (`directory.forwarding`): mail for a mailbox that forwards goes to its target (a
Redirect event), and to the mailbox itself too when it keeps a copy. Each mailbox forwards once per
message. The forwarded copy gets its own trace row (the target's address, as a group member does);
the mailbox's row is `forwarded` unless the mailbox keeps a copy.

- A target in one of the tenant's own accepted domains is routed like a recipient of the tenant (its
  aliases, groups and forwarding apply). Chains are bounded: a forward to a mailbox already on the
  chain (A→B→A) or past `MAX_FORWARD_HOPS` hops is not made, and the mailbox that would have made it
  keeps the message (a Redirect event says why); so is a forward to an address of ours that no
  recipient has. Nothing is lost, nothing loops.
- Any other target (another tenant's, which is a remote organization, or the internet's) is an
  external forward (spec §10.5): allowed only when the tenant's automatic forwarding is `on` AND its
  remote domain covering the target allows automatic forwarding. An allowed one is routed remote with
  the sender rewritten by SRS (`srs`; the null sender stays null). A refused one is routed already
  failed (`failure` = 550 5.7.520, a Fail event) with `envelope_sender` = the forwarding mailbox's
  primary address, so the queue's NDR goes to the owner who set the forwarding up, and the mailbox
  keeps the message.

A `Relayed` recipient routes remote: a remote recipient of an authenticated sender (or of a source
attributed to the tenant's on-premises connector) as its tenant's mail, an unknown recipient of an
internal-relay domain as its tenant's mail (its on-premises connector takes it), and a bounce to one
of our SRS addresses to the decoded address, mail of no tenant when it leaves the service, with a
Resolve event.

**Outbound connectors** (spec §3.3, `model.connectors`): every remote route of a tenant T (an
internet recipient, another organization's, a contact, an external forward, a Relayed one) leaves by
`choose_outbound(T's connectors, its domain, accepted_domain=<the domain is one of T's verified
accepted domains>)`: an exact recipient-domain match, else an all-accepted-domains connector, else
the longest wildcard; none: by MX. The route carries `connector_id` (the queue keeps it, delivery
follows the connector's smart hosts and TLS settings) and a Resolve event names the connector. Mail
of no tenant never uses a connector. A route that failed while it was routed takes none.

- **Centralized mail transport** (`route_all_via_on_premises`, spec §4 hybrid 2): when T has an
  enabled OnPremises connector with it, every route of T, its own mailboxes included, goes to that
  connector (a mailbox's copy is addressed to its primary address), unless the message came from
  T's on-premises servers (`source.on_premises_tenant == T`): mail on its way back is delivered as
  usual, so it never loops. A Redirect event says so (`connector`, `centralized_mail_transport`).
- **Sender rewriting** (`sender_rewriting`, OnPremises): a route over such a connector whose envelope
  sender is not in one of T's accepted domains leaves with the SRS sender (`srs.forward`), so the
  on-premises server's SPF check of an outside sender passes and its bounces come back; the null
  sender and a sender already at the SRS domain are kept.

Every outcome is typed: `Categorized.routes` to queue, `events` for trace, `statuses` for the trace
summary (a group's row is `expanded`, each route's row `pending`, a member that cannot be resolved
`failed` with its reason). Each status row carries the address as given and what it resolved to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from postroom.directory import AddressOwner, DirectoryView, RecipientKind
from postroom.model import Address, AddressError, replies
from postroom.model.address import destination_of
from postroom.model.connectors import (
    ConnectorType,
    OutboundConnector,
    Source,
    choose_outbound,
    on_premises_route,
)
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceEvent, TraceRecipient, TraceStatus
from postroom.routing.resolve import Accepted, Relayed
from postroom.routing.srs import Srs

MAX_GROUP_DEPTH = 10
MAX_FORWARD_HOPS = 4  # mailboxes one message may be forwarded through
OVERFLOW_SAMPLE = 10  # recipients named in the event of those past the limit
LIMIT_NAME = "routing.max_expanded_recipients"


@dataclass(slots=True)
class Categorized:
    routes: list[RoutedRecipient] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)
    statuses: list[TraceRecipient] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Visit:
    address: str
    tenant_id: int  # whose mail this is
    depth: int
    path: frozenset[int]  # the groups expanded on the way here
    owner: AddressOwner | None = None  # known already (a recipient accepted at RCPT)
    forwards: tuple[int, ...] = ()  # the mailboxes that forwarded the message here, in order


def categorize(
    directory: DirectoryView,
    message_id: str,
    accepted: Sequence[Accepted | Relayed],
    *,
    max_recipients: int,
    sender: str = "",
    srs: Srs | None = None,
    source: Source | None = None,
) -> Categorized:
    """Route the accepted recipients of a message from `sender` ("" for <>); `srs` rewrites the sender
    of external forwards (None: they keep it); `source` is where the message came from (its inbound
    connector attribution; None: an ordinary client)."""
    result = Categorized()
    routed: dict[tuple[int | None, str], int] = {}  # (tenant, final recipient key) -> index in routes
    trace_rows: set[str] = set()
    expanded: set[int] = set()
    forwarded: set[int] = set()  # mailboxes that forwarded this message already
    past_limit: dict[int | None, list[str]] = {}  # tenant -> the recipients past the limit, in order
    connectors: dict[int, tuple[OutboundConnector, ...]] = {}  # tenant -> its outbound connectors

    def event(kind: EventKind, tenant_id: int | None, address: str, detail: dict[str, object]) -> None:
        result.events.append(TraceEvent(message_id, kind, tenant_id, address, detail))

    def status(tenant_id: int | None, recipient: str, value: TraceStatus, resolved: str = "") -> None:
        if recipient.lower() not in trace_rows:
            trace_rows.add(recipient.lower())
            result.statuses.append(TraceRecipient(message_id, tenant_id, recipient, value, resolved))

    def own_domain(tenant_id: int, domain: str) -> bool:
        found = directory.domain(domain)
        return found is not None and found.tenant_id == tenant_id and found.receives_mail

    def outbound_of(tenant_id: int) -> tuple[OutboundConnector, ...]:
        if tenant_id not in connectors:
            connectors[tenant_id] = directory.outbound_connectors(tenant_id)
        return connectors[tenant_id]

    def via_connector(new: RoutedRecipient) -> RoutedRecipient:
        """The route with the outbound connector it leaves by, if any (see the module docstring)."""
        tenant_id = new.tenant_id
        if tenant_id is None or new.failure:
            return new
        domain = destination_of(new.recipient)
        connector = None
        if source is None or source.on_premises_tenant != tenant_id:
            connector = on_premises_route(outbound_of(tenant_id))
        centralized = connector is not None
        if connector is None and new.route is Route.REMOTE:
            connector = choose_outbound(outbound_of(tenant_id), domain, own_domain(tenant_id, domain))
        if connector is None:
            return new
        detail: dict[str, object] = {"connector": connector.name, "to": new.recipient}
        envelope_sender = new.envelope_sender
        if connector.type is ConnectorType.ON_PREMISES and connector.sender_rewriting and srs is not None:
            current = sender if envelope_sender is None else envelope_sender
            current_domain = destination_of(current)
            if current and current_domain != srs.domain and not own_domain(tenant_id, current_domain):
                envelope_sender = srs.forward(current)
                detail["envelope_sender"] = envelope_sender
        if centralized:
            detail["centralized_mail_transport"] = True
        kind = EventKind.REDIRECT if centralized else EventKind.RESOLVE
        event(kind, tenant_id, new.original_recipient, detail)
        return replace(
            new,
            route=Route.REMOTE,
            mailbox_id=None,
            connector_id=connector.id,
            envelope_sender=envelope_sender,
        )

    def route(new: RoutedRecipient, key: str, direct: bool) -> None:
        """Route a final recipient once; a direct RCPT that repeats one shares its delivery."""
        index = routed.get((new.tenant_id, key))
        if index is None:
            if len(result.routes) >= max_recipients:
                past_limit.setdefault(new.tenant_id, []).append(new.original_recipient)
                return
            routed[(new.tenant_id, key)] = len(result.routes)
            result.routes.append(via_connector(new))
        elif direct and new.original_recipient.lower() not in trace_rows:
            first = result.routes[index]
            result.routes[index] = replace(first, also_settles=(*first.also_settles, new.original_recipient))
        else:
            return
        status(new.tenant_id, new.original_recipient, TraceStatus.PENDING, new.recipient)

    def route_remote(tenant_id: int, target: Address, row: str, direct: bool) -> None:
        route(RoutedRecipient(str(target), row, tenant_id, Route.REMOTE), target.key, direct)

    pending: deque[_Visit] = deque()

    def visit(item: _Visit) -> None:
        address, tenant_id, depth = item.address, item.tenant_id, item.depth
        try:
            parsed = Address.parse(address)
        except AddressError:
            return
        direct = depth == 0
        owner = item.owner or directory.address(parsed.key)
        if owner is not None and owner.tenant_id != tenant_id:
            route_remote(tenant_id, parsed, address, direct)  # another organization's recipient
            return
        if owner is None:
            domain = directory.domain(parsed.domain)
            if domain is not None and domain.tenant_id == tenant_id:
                event(EventKind.FAIL, tenant_id, address, {"reply": str(replies.GROUP_MEMBER_NOT_FOUND)})
                status(tenant_id, address, TraceStatus.FAILED)
                return
            route_remote(tenant_id, parsed, address, direct)
            return
        if owner.primary_address.lower() != address.lower():
            event(EventKind.RESOLVE, tenant_id, address, {"resolved_to": owner.primary_address})
        if owner.kind is RecipientKind.MAILBOX:
            mailbox(item, owner, direct)
        elif owner.kind is RecipientKind.CONTACT:
            target = Address.parse(owner.external_address) if owner.external_address else parsed
            route_remote(tenant_id, target, address, direct)
        elif owner.recipient_id in item.path:
            event(EventKind.EXPAND, tenant_id, address, {"skipped": "group loop"})
        elif owner.recipient_id in expanded:
            return  # expanded once already for this message, by another path
        elif depth >= MAX_GROUP_DEPTH:
            event(EventKind.EXPAND, tenant_id, address, {"skipped": "nesting too deep"})
        else:
            expanded.add(owner.recipient_id)
            members = directory.members(owner.recipient_id)
            event(EventKind.EXPAND, tenant_id, address, {"members": members})
            status(tenant_id, address, TraceStatus.EXPANDED, owner.primary_address)
            path = item.path | {owner.recipient_id}
            pending.extend(_Visit(member, tenant_id, depth + 1, path) for member in members)

    def deliver_locally(owner: AddressOwner, address: str, tenant_id: int, direct: bool) -> None:
        local = RoutedRecipient(owner.primary_address, address, tenant_id, Route.LOCAL, owner.recipient_id)
        route(local, Address.parse(owner.primary_address).key, direct)

    def mailbox(item: _Visit, owner: AddressOwner, direct: bool) -> None:
        address, tenant_id = item.address, item.tenant_id
        forward = None if owner.recipient_id in forwarded else directory.forwarding(owner.recipient_id)
        try:
            target = Address.parse(forward.forward_to) if forward is not None else None
        except AddressError:
            target = None  # stored by another version: the mailbox keeps its mail
        if forward is None or target is None:
            deliver_locally(owner, address, tenant_id, direct)
            return
        forwarded.add(owner.recipient_id)
        chain = (*item.forwards, owner.recipient_id)
        detail: dict[str, object] = {"to": str(target), "keep_copy": forward.keep_copy}
        domain = directory.domain(target.domain)
        if domain is not None and domain.tenant_id == tenant_id:
            target_owner = directory.address(target.key)
            if target_owner is None:
                detail["skipped"] = "no recipient has the address"
            elif target_owner.recipient_id in chain:
                detail["skipped"] = "forwarding loop"
            elif len(chain) > MAX_FORWARD_HOPS:
                detail["skipped"] = "too many forwarding hops"
            event(EventKind.REDIRECT, tenant_id, address, detail)
            if forward.keep_copy or "skipped" in detail:
                deliver_locally(owner, address, tenant_id, direct)
            else:
                status(tenant_id, address, TraceStatus.FORWARDED, str(target))
            if "skipped" not in detail:
                pending.append(_Visit(str(target), tenant_id, item.depth + 1, item.path, forwards=chain))
            return
        allowed = (
            directory.auto_forward(tenant_id).allows
            and directory.remote_domain(tenant_id, target.domain).auto_forward
        )
        if not allowed:
            reply = str(replies.FORWARDING_DENIED)
            detail["refused"] = reply
            event(EventKind.REDIRECT, tenant_id, address, detail)
            deliver_locally(owner, address, tenant_id, direct)  # nothing is lost
            event(
                EventKind.FAIL,
                tenant_id,
                str(target),
                {"reply": reply, "forwarded_by": owner.primary_address},
            )
            status(tenant_id, str(target), TraceStatus.FAILED, str(target))
            refused = RoutedRecipient(
                str(target),
                str(target),
                tenant_id,
                Route.REMOTE,
                envelope_sender=owner.primary_address,
                failure=reply,
            )
            route(refused, target.key, False)
            return
        rewritten = srs.forward(sender) if srs is not None and sender else None
        if rewritten is not None:
            detail["envelope_sender"] = rewritten
        event(EventKind.REDIRECT, tenant_id, address, detail)
        if forward.keep_copy:
            deliver_locally(owner, address, tenant_id, direct)
        else:
            status(tenant_id, address, TraceStatus.FORWARDED, str(target))
        copy = RoutedRecipient(str(target), str(target), tenant_id, Route.REMOTE, envelope_sender=rewritten)
        route(copy, target.key, False)

    for relayed in (a for a in accepted if isinstance(a, Relayed)):
        recipient, target = str(relayed.recipient), relayed.target
        if target != relayed.recipient:  # a bounce to an SRS address: the original sender
            event(EventKind.RESOLVE, relayed.tenant_id, recipient, {"resolved_to": str(target), "srs": True})
        route(RoutedRecipient(str(target), recipient, relayed.tenant_id, Route.REMOTE), target.key, True)
    # Direct recipients first, so each RCPT keeps its own trace row when a group repeats it.
    direct_items = [a for a in accepted if isinstance(a, Accepted)]
    for item in sorted(direct_items, key=lambda a: a.owner.kind is RecipientKind.GROUP):
        pending.append(_Visit(str(item.recipient), item.owner.tenant_id, 0, frozenset(), item.owner))
    while pending:
        visit(pending.popleft())
    for tenant_id, recipients in past_limit.items():
        detail: dict[str, object] = {
            "reply": str(replies.TOO_MANY_EXPANDED_RECIPIENTS),
            "limit": LIMIT_NAME,
            "max": max_recipients,
            "count": len(recipients),
            "sample": recipients[:OVERFLOW_SAMPLE],
        }
        event(EventKind.FAIL, tenant_id, "", detail)
    return result
