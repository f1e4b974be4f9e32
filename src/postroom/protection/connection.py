"""The connection filter: IP Allow and Block lists, DNS blocklists and rate limits per client (spec §10.2).

One `ConnectionFilter` per process (built by `app` from `[protection]`), one `ConnectionCheck` per
connection to the MX endpoint (`ConnectionFilter.check`). What it decides, in this order:

- **At connect** (`ConnectionCheck.connect`, no I/O): an address on the service-wide IP Block list is
  refused with `554 5.7.513` and the connection closes, unless the service-wide IP Allow list holds
  it too (allow beats block). An allowed address is stamped `IPV:CAL` (spam filtering is skipped
  later), is not rate limited and no DNS blocklist is asked about it. Any other address counts one
  connection of its minute; past `connections_per_minute` it gets `421 4.7.0` (and the session closes).
  The DNS blocklists are asked now, all zones in parallel through the resolver (which caches), in a
  task the first RCPT awaits: the greeting never waits for the DNS.
- **At MAIL** (`ConnectionCheck.mail`): one message of the minute; past `messages_per_minute`,
  `421 4.7.0`. Allow-listed addresses are not counted, nor a client that an OnPremises inbound
  connector of a tenant claims (by IP at connect, by IP or certificate at MAIL: `exempt`; spec
  §3.6, connectors avoid the throttling of unknown sources). Its lists and blocklists still apply.
- **At DATA, for enhanced filtering** (`ConnectionFilter.judge`): the original internet sender
  behind a tenant's gateway is judged by the same lists and blocklists (not the rates), for the
  tenant whose connector found it.
- **At each RCPT** whose recipient routing accepted (`ConnectionCheck.recipient`), for the
  recipient's tenant: its own IP Allow list accepts (`IPV:CAL` for that tenant, whatever the service
  lists and blocklists say); else its IP Block list refuses that tenant's recipients with
  `550 5.7.513` (even when the service allow-lists the address: a tenant decides about its own mail);
  else a DNS blocklist listing refuses with `550 5.7.1 ... blocked using <zone>`; else the
  service-wide verdict stands. Other tenants' recipients in the same transaction are decided for
  their own tenants.

The outcome for the rest of the stack: `ConnectionCheck.verdict` is the service-wide
`ConnectionVerdict` (service lists and blocklists), final once the first RCPT was decided (so
before DATA); `RecipientCheck.verdict` is what applies to one tenant's recipients.

Guarantees. Membership is O(log n) (`model.ipfilter.IpList`). A tenant's lists are parsed once per
change (kept for `TENANT_LISTS_CACHED` tenants, by tenant id, which is never reused, and never by a
name: a new tenant with a removed tenant's names never sees its lists). The rate table (`RateLimits`)
holds at most `max_clients` clients: past it the client whose minute began first is forgotten (its
limit gets looser, memory never grows); an IPv6 client is counted per /64, so one host cannot
multiply its allowance with addresses.
The limits are per process: a node of N worker processes lets a client make N times as many.

Failure behaviour. A DNS blocklist that fails or times out never refuses mail: the failure is
logged (warning) and the address counts as not listed on that zone. A tenant list read back from the
directory with a bad entry (it is checked when written) is used without the entry, and logged.

*Security:* the client address comes from the socket (or a PROXY header of a trusted balancer), never
from the client's words. DNS answers are untrusted: only A records inside the zone's listed codes count,
so a resolver that answers for every name cannot block mail unless it answers with 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from postroom import metrics
from postroom.dns import DnsError, NxDomain, Resolver
from postroom.model import Reply, replies
from postroom.model.ipfilter import EMPTY, Blocklist, IpAddress, IpList, IpListError, client_address
from postroom.model.policy import ConnectionPolicy
from postroom.model.verdicts import ConnectionVerdict, IpListing

MINUTE = 60.0  # the window of the rate limits
TENANT_LISTS_CACHED = 1_024  # tenants whose connection policies are kept parsed
SERVICE = "service"

log = logging.getLogger(__name__)
NOT_LISTED = ConnectionVerdict()


class _Window:
    """One client's counts in the minute that began at `start`."""

    __slots__ = ("connections", "messages", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.connections = 0
        self.messages = 0


class RateLimits:
    """Connections and messages per minute per client, in a table of bounded size (no I/O, not locked:
    one event loop uses it)."""

    def __init__(
        self,
        *,
        connections_per_minute: int,
        messages_per_minute: int,
        max_clients: int,  # [protection] rate_limited_clients
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connections_per_minute = connections_per_minute
        self.messages_per_minute = messages_per_minute
        self.max_clients = max_clients
        self._clock = clock
        # In the order their minutes began: the expired and the oldest are at the front.
        self._clients: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def connection(self, client: str) -> bool:
        """Count a connection of `client` (`client_key`); False when it is past the limit of its minute."""
        window = self._window(client)
        window.connections += 1
        return window.connections <= self.connections_per_minute

    def message(self, client: str) -> bool:
        """Count a message (a MAIL) of `client`; False when it is past the limit of its minute."""
        window = self._window(client)
        window.messages += 1
        return window.messages <= self.messages_per_minute

    def _window(self, key: str) -> _Window:
        now = self._clock()
        clients = self._clients
        window = clients.get(key)
        if window is not None:
            if now - window.start < MINUTE:
                return window
            del clients[key]
        while clients:
            oldest = next(iter(clients.values()))
            if now - oldest.start < MINUTE and len(clients) < self.max_clients:
                break
            clients.popitem(last=False)
        window = clients[key] = _Window(now)
        metrics.RATE_LIMITED_CLIENTS.set(len(clients))
        return window


def client_key(address: IpAddress) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64."""
    if isinstance(address, IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@dataclass(frozen=True, slots=True)
class TenantLists:
    """A tenant's connection policy, parsed."""

    allow: IpList
    block: IpList


def parse_tenant_lists(policy: ConnectionPolicy) -> TenantLists:
    """`policy`'s lists, parsed; a bad entry (lists are checked when written) is left out and logged."""
    lists = []
    for name, entries in (("ip_allow", policy.ip_allow), ("ip_block", policy.ip_block)):
        try:
            lists.append(IpList.parse(entries))
        except IpListError as error:
            log.error("a tenant's connection policy %s has bad entries, left out: %s", name, error)
            lists.append(IpList.parse(entries, skip_invalid=True))
    return TenantLists(*lists)


@dataclass(frozen=True, slots=True)
class RecipientCheck:
    """The connection filter's word on one recipient: the verdict for its tenant, and the refusal (a
    `Reply`) when the filter refuses it; `by_blocklist` says a DNS blocklist refused it, not a list."""

    verdict: ConnectionVerdict
    refusal: Reply | None = None
    by_blocklist: bool = False


class ConnectionFilter:
    """The process-wide filter: the service lists, the DNS blocklists and the rate table."""

    def __init__(
        self,
        *,
        allow: IpList = EMPTY,
        block: IpList = EMPTY,
        blocklists: Sequence[Blocklist] = (),
        resolver: Resolver | None = None,
        rates: RateLimits,
    ) -> None:
        if blocklists and resolver is None:
            raise ValueError("DNS blocklists need a resolver")
        self.allow = allow
        self.block = block
        self.blocklists = tuple(blocklists)
        self._resolver = resolver
        self.rates = rates
        # Each tenant's lists as parsed, by tenant id (never reused), with the policy they came from.
        self._tenant_lists: OrderedDict[int, tuple[ConnectionPolicy, TenantLists]] = OrderedDict()

    def check(self, peer_ip: str) -> ConnectionCheck:
        """The check of one connection from `peer_ip`."""
        return ConnectionCheck(self, client_address(peer_ip))

    async def judge(self, ip: str, tenant_id: int | None, policy: ConnectionPolicy | None) -> RecipientCheck:
        """The lists' and blocklists' word on an address that did not connect: the original internet
        sender that enhanced filtering found behind a tenant's gateway (spec §3.7). The order of a
        connection's checks, without the rates: the tenant's Allow list, its Block list, the
        service's Allow list, the service's Block list, the DNS blocklists. A refusal carries the
        reply the address would have got had it connected itself."""
        address = client_address(ip)
        if address is None:
            return RecipientCheck(NOT_LISTED)
        if tenant_id is not None and policy is not None:
            lists = self.tenant_lists(tenant_id, policy)
            allowed = lists.allow.match(address)
            if allowed is not None:
                return RecipientCheck(ConnectionVerdict(IpListing.ALLOWED, f"tenant:{tenant_id}", allowed))
            blocked = lists.block.match(address)
            if blocked is not None:
                verdict = ConnectionVerdict(IpListing.BLOCKED, f"tenant:{tenant_id}", blocked)
                reply = replies.CUSTOMER_BLOCKED
                return RecipientCheck(verdict, reply.with_text(reply.text.format(ip=address)))
        allowed = self.allow.match(address)
        if allowed is not None:
            return RecipientCheck(ConnectionVerdict(IpListing.ALLOWED, SERVICE, allowed))
        blocked = self.block.match(address)
        if blocked is not None:
            verdict = ConnectionVerdict(IpListing.BLOCKED, SERVICE, blocked)
            reply = replies.SERVICE_BLOCKED
            return RecipientCheck(verdict, reply.with_text(reply.text.format(ip=address)))
        if self.blocklists:
            verdict = await self.blocklisted(address)
            if verdict.listing is IpListing.BLOCKED:
                zone = verdict.list_name.removeprefix("dnsbl:")
                reply = replies.BLOCKLISTED
                return RecipientCheck(
                    verdict, reply.with_text(reply.text.format(ip=address, zone=zone)), by_blocklist=True
                )
        return RecipientCheck(NOT_LISTED)

    def tenant_lists(self, tenant_id: int, policy: ConnectionPolicy) -> TenantLists:
        """The tenant's lists, parsed once per policy: the directory cache hands out the same policy
        object until it changes (compared by identity first: hashing 1,273 entries per RCPT is not free)."""
        cache = self._tenant_lists
        held = cache.get(tenant_id)
        if held is not None and (held[0] is policy or held[0] == policy):
            cache.move_to_end(tenant_id)
            return held[1]
        lists = parse_tenant_lists(policy)
        cache[tenant_id] = (policy, lists)
        cache.move_to_end(tenant_id)
        if len(cache) > TENANT_LISTS_CACHED:
            cache.popitem(last=False)
        return lists

    async def blocklisted(self, address: IpAddress) -> ConnectionVerdict:
        """The first configured zone that lists `address` (all asked at once), or NOT_LISTED."""
        answers = await asyncio.gather(*(self._ask(zone, address) for zone in self.blocklists))
        for zone, answer in zip(self.blocklists, answers, strict=True):
            if answer is not None:
                return ConnectionVerdict(IpListing.BLOCKED, f"dnsbl:{zone.zone}", answer)
        return NOT_LISTED

    async def _ask(self, zone: Blocklist, address: IpAddress) -> str | None:
        """The listing answer of one zone for `address`, or None (not listed, or the lookup failed)."""
        assert self._resolver is not None
        name = zone.query_name(address)
        try:
            found = await self._resolver.a(name)
        except NxDomain:
            return None
        except DnsError as error:
            log.warning("DNS blocklist %s failed for %s (treated as not listed): %s", zone, address, error)
            return None
        listed = [answer for answer in found if zone.lists(answer)]
        return str(min(listed)) if listed else None


class ConnectionCheck:
    """The connection filter for one connection (see the module docstring for the order)."""

    def __init__(self, owner: ConnectionFilter, address: IpAddress | None) -> None:
        self._filter = owner
        self.address = address  # None: not an IP client (nothing to filter)
        self._client = "" if address is None else client_key(address)  # as the rate table counts it
        self.verdict = NOT_LISTED  # the service-wide verdict, final after the first recipient
        self._blocklists: asyncio.Future[ConnectionVerdict] | None = None
        self._rated = True  # counted against the rates (not: a tenant's on-premises connector's client)

    def exempt(self) -> None:
        """Count this connection's messages no more: it belongs to a tenant's OnPremises inbound
        connector (spec §3.6: connectors avoid the throttling unknown sources get)."""
        self._rated = False

    def connect(self, *, exempt: bool = False) -> Reply | None:
        """The reply that refuses the connection, or None (and the blocklists are being asked).
        `exempt`: the client's IP is an OnPremises inbound connector's, not counted against the rates."""
        if exempt:
            self.exempt()
        owner, address = self._filter, self.address
        if address is None:
            return None
        allowed = owner.allow.match(address)
        if allowed is not None:
            self.verdict = ConnectionVerdict(IpListing.ALLOWED, SERVICE, allowed)
            return None
        blocked = owner.block.match(address)
        if blocked is not None:
            self.verdict = ConnectionVerdict(IpListing.BLOCKED, SERVICE, blocked)
            return _refuse("service-block", replies.SERVICE_BLOCKED, address, f"service block list {blocked}")
        if self._rated and not owner.rates.connection(self._client):
            return _refuse("connection-rate", replies.CONNECTION_RATE_EXCEEDED, address, "connection rate")
        if owner.blocklists:
            self._blocklists = asyncio.ensure_future(owner.blocklisted(address))
        return None

    def mail(self) -> Reply | None:
        """The reply that refuses a MAIL for the client's message rate, or None."""
        address = self.address
        if address is None or self.verdict.listing is IpListing.ALLOWED or not self._rated:
            return None
        if not self._filter.rates.message(self._client):
            return _refuse("message-rate", replies.MESSAGE_RATE_FROM_CLIENT_EXCEEDED, address, "message rate")
        return None

    async def recipient(self, tenant_id: int | None, policy: ConnectionPolicy | None) -> RecipientCheck:
        """The word on a recipient routing accepted, of tenant `tenant_id` (None: the service's own
        mail, an SRS bounce) whose connection policy is `policy`."""
        address = self.address
        if self._blocklists is not None:
            future, self._blocklists = self._blocklists, None
            self.verdict = await future
        if address is None:
            return RecipientCheck(self.verdict)
        if tenant_id is not None and policy is not None:
            lists = self._filter.tenant_lists(tenant_id, policy)
            allowed = lists.allow.match(address)
            if allowed is not None:
                return RecipientCheck(ConnectionVerdict(IpListing.ALLOWED, f"tenant:{tenant_id}", allowed))
            blocked = lists.block.match(address)
            if blocked is not None:
                verdict = ConnectionVerdict(IpListing.BLOCKED, f"tenant:{tenant_id}", blocked)
                metrics.CONNECTION_FILTER_REFUSALS.labels("tenant-block").inc()
                reply = replies.CUSTOMER_BLOCKED
                return RecipientCheck(verdict, reply.with_text(reply.text.format(ip=address)))
        verdict = self.verdict
        if verdict.listing is IpListing.BLOCKED:  # a blocklist (a service block never gets here)
            zone = verdict.list_name.removeprefix("dnsbl:")
            reply = replies.BLOCKLISTED.with_text(replies.BLOCKLISTED.text.format(ip=address, zone=zone))
            metrics.CONNECTION_FILTER_REFUSALS.labels("blocklist").inc()
            return RecipientCheck(verdict, reply, by_blocklist=True)
        return RecipientCheck(verdict)

    def close(self) -> None:
        """The connection is gone: stop asking the blocklists if they have not answered."""
        future, self._blocklists = self._blocklists, None
        if future is None:
            return
        if future.done():
            with contextlib.suppress(asyncio.CancelledError):
                future.exception()  # retrieved: an unread failure is not reported as lost
        else:
            future.cancel()


def _refuse(refusal: str, reply: Reply, address: IpAddress, why: str) -> Reply:
    """A refusal of the connection or of a MAIL: counted and logged (no trace holds it). Refused
    recipients are counted only: the trace and the mail log line of their transaction hold them."""
    metrics.CONNECTION_FILTER_REFUSALS.labels(refusal).inc()
    log.info("connection filter: refused %s (%s)", address, why)
    return reply.with_text(reply.text.format(ip=address))
