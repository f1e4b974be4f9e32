"""Mail hosts of a destination domain: where outbound mail for it goes (RFC 5321 §5.1, RFC 7505).

`mail_hosts(resolver, domain)` answers the MX hosts of `domain` in the order to try them: by
preference, lowest first, in random order among equal preferences (RFC 5321 §5.1 load spreading);
a domain without MX records but with A/AAAA records is its own mail host (the implicit MX, preference
0). Each host comes with its addresses (A, then AAAA), at most `max_addresses` of them, and at most
`max_hosts` hosts are answered. MX hosts that resolve to no address are skipped.

`without_local(hosts, is_local)` applies RFC 5321 §5.1's rule for a host that finds itself in the MX
list: it and every host of the same or a less preferred rank are dropped, so mail is never sent to
ourselves through a destination's MX.

Failures are `MailHostError`s carrying the reply for every recipient of the domain:

    null MX (`0 .`, RFC 7505)                       556 5.1.10 (permanent, at once)
    the domain does not exist (NXDOMAIN)            550 5.1.2  (permanent)
    no MX and no address, or MX hosts without one   451 4.4.4  (retry: DNS may be fixed)
    a temporary DNS failure (timeout, SERVFAIL)     451 4.4.3  (retry)
    the MX list names only this service             554 5.4.14 (a routing loop, permanent)

*Security:* MX and address records come from the DNS and are untrusted; a hostile domain can list
many hosts or addresses, so both counts are bounded, and it can point its MX at this service, which
`without_local` turns into a failure instead of a loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver
from postroom.model import replies
from postroom.model.replies import Reply

IMPLICIT_MX_PREFERENCE = 0


class MailHostError(Exception):
    """The destination's mail hosts cannot be had; `reply` is what each of its recipients gets."""

    def __init__(self, reply: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailHost:
    """One host to try: its name, MX preference, and addresses (IPv4 first); `port` 0 is the delivery's
    SMTP port (an outbound connector's smart host may name its own)."""

    name: str
    preference: int
    addresses: tuple[str, ...]
    port: int = 0


async def mail_hosts(
    resolver: Resolver,
    domain: str,
    *,
    max_hosts: int = 5,
    max_addresses: int = 4,
    rng: random.Random | None = None,
) -> list[MailHost]:
    """The hosts to try for `domain`, in order; raises `MailHostError` (see the module docstring)."""
    shuffle = (rng or random).shuffle
    try:
        records = await resolver.mx(domain)
        if any(record.is_null for record in records):
            raise MailHostError(replies.NULL_MX, f"{domain} publishes a null MX (RFC 7505)")
        if not records:
            addresses = await host_addresses(resolver, domain, max_addresses)
            if not addresses:
                raise MailHostError(replies.NO_MAIL_HOST, f"{domain} has no MX and no A/AAAA record")
            return [MailHost(domain, IMPLICIT_MX_PREFERENCE, addresses)]
        ranks: dict[int, list[str]] = {}
        for record in records:
            ranks.setdefault(record.preference, []).append(record.exchange)
        ordered: list[tuple[int, str]] = []
        for preference in sorted(ranks):
            names = list(dict.fromkeys(ranks[preference]))
            shuffle(names)
            ordered += [(preference, name) for name in names]
    except NxDomain as error:
        raise MailHostError(replies.BAD_DESTINATION_SYSTEM, str(error)) from error
    except DnsTemporaryError as error:
        raise MailHostError(replies.DNS_TEMPORARY, str(error)) from error
    hosts: list[MailHost] = []
    temporary: DnsTemporaryError | None = None
    for preference, name in ordered[:max_hosts]:
        try:
            addresses = await host_addresses(resolver, name, max_addresses)
        except NxDomain:
            continue  # a dangling MX host: the others may still take the mail
        except DnsTemporaryError as error:
            temporary = error
            continue
        if addresses:
            hosts.append(MailHost(name, preference, addresses))
    if not hosts:
        if temporary is not None:
            raise MailHostError(replies.DNS_TEMPORARY, str(temporary)) from temporary
        raise MailHostError(replies.NO_MAIL_HOST_ADDRESS, f"no MX host of {domain} has an address")
    return hosts


def without_local(hosts: Sequence[MailHost], is_local: Callable[[MailHost], bool]) -> list[MailHost]:
    """RFC 5321 §5.1: drop this service and every host not more preferred than it; raises
    `MailHostError` (554 5.4.14) when nothing is left."""
    local = [host.preference for host in hosts if is_local(host)]
    if not local:
        return list(hosts)
    kept = [host for host in hosts if host.preference < min(local)]
    if not kept:
        names = ", ".join(host.name for host in hosts if is_local(host))
        raise MailHostError(replies.MAIL_HOST_IS_LOCAL, f"the MX list points at this service ({names})")
    return kept


async def host_addresses(resolver: Resolver, name: str, limit: int) -> tuple[str, ...]:
    """A then AAAA addresses of `name`, at most `limit`; NXDOMAIN of the name raises `NxDomain`, a
    failure with nothing found raises `DnsTemporaryError`, NODATA of both is ()."""
    found = [str(address) for address in await resolver.a(name)]
    try:
        found += [str(address) for address in await resolver.aaaa(name)]
    except DnsTemporaryError:
        if not found:
            raise  # nothing to try yet: defer
    return tuple(found[:limit])
