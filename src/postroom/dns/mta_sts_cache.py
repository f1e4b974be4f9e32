"""The MTA-STS policies of the domains Postroom sends to: looked up, fetched, cached (RFC 8461 §5.1).

`StsPolicyCache.lookup(resolver, domain)` answers what a sending MTA must know before it connects: the
domain's policy (`enforce`, `testing` or `none`) or none at all, and why. It asks the `_mta-sts.<domain>`
TXT record (through the resolver and its cache), and:

- a valid TXT id equal to the cached policy's, policy not expired: the cached policy (no fetch);
- a valid TXT id that differs, or no cached policy, or an expired one: fetch the policy
  (`dns.mta_sts.fetch_sts_policy`, or any `StsFetch`); a policy fetched keeps for its `max_age`
  (from the fetch) under the TXT's id;
- the fetch fails: the cached policy while it has not expired (§5.1: a failed refetch never drops a
  known policy), else none; the domain is not fetched again for `fetch_retry` seconds (§5.1 lets
  senders rate-limit fetches), so a policy host that hangs costs at most one `fetch_timeout` per
  `fetch_retry`, not one per message;
- no usable TXT record (none, several, malformed, NXDOMAIN) or the TXT lookup fails: the cached policy
  while it has not expired (a TXT record that vanished, or that an attacker suppressed, does not switch
  off a policy before its `max_age`, §5.1 and §10.2), else none.

A policy in mode `none` is cached like the others (so it replaces an older `enforce`, as §5.1 intends).
Concurrent lookups of one domain share one fetch. The cache holds at most `max_entries` domains (least
recently used dropped first) and reads time from an injectable monotonic clock.

`sts_fetcher(settings)` (and `StsPolicyCache.from_settings`) makes the production fetch from
`[mta_sts]`: HTTPS verified against the system trust store plus `ca_file`, on `policy_port` (plain HTTP
when `policy_https` is false: labs only), bounded by `fetch_timeout`.

*Security:* the TXT record and the policy are untrusted network input, parsed by `dns.mta_sts` (bounded
size, no redirects, certificate verified for `mta-sts.<domain>`). A policy served over a certificate that
does not verify is a failed fetch, so it is never used (§3.3). Nothing here raises for DNS or network
trouble: every outcome is a `StsLookup`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from postroom.config.settings import MtaStsSettings
from postroom.dns.mta_sts import FetchedPolicy, MtaStsError, StsPolicy, fetch_sts_policy, parse_sts_txt
from postroom.dns.resolver import Clock, DnsError, NxDomain, Resolver

_DEFAULTS = MtaStsSettings()

StsFetch = Callable[["Resolver", str], Awaitable[FetchedPolicy]]  # (resolver, domain) -> its policy, fetched


class StsSource(StrEnum):
    """Where the policy of a `StsLookup` came from."""

    FETCHED = "fetched"  # fetched just now
    CACHED = "cached"  # the cached policy, its TXT id unchanged
    KEPT = "kept"  # the cached policy, kept because the TXT or the refetch failed (§5.1)
    NONE = "none"  # no policy applies


@dataclass(frozen=True, slots=True)
class StsLookup:
    """What the cache says for a domain: `policy` (None: no MTA-STS), where it came from, and `problem`
    (why there is none, or why a cached one was kept: the TXT or fetch failure, for logs and trace)."""

    domain: str
    policy: StsPolicy | None
    source: StsSource
    problem: str = ""


@dataclass(slots=True)
class _Entry:
    policy_id: str
    policy: StsPolicy
    expires: float  # on the cache's clock


class StsPolicyCache:
    """Cached MTA-STS policies of destination domains; see the module docstring."""

    def __init__(
        self,
        fetch: StsFetch,
        *,
        max_entries: int = _DEFAULTS.cache_size,
        fetch_retry: float = _DEFAULTS.fetch_retry,
        clock: Clock = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_entries = max_entries
        self._fetch_retry = fetch_retry
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._failed_until: dict[str, tuple[float, str]] = {}  # domain -> (time, the fetch's error)
        self._in_flight: dict[str, asyncio.Future[FetchedPolicy]] = {}

    @classmethod
    def from_settings(cls, settings: MtaStsSettings, *, clock: Clock = time.monotonic) -> StsPolicyCache:
        """The cache `[mta_sts]` describes (see `sts_fetcher`)."""
        return cls(
            sts_fetcher(settings),
            max_entries=settings.cache_size,
            fetch_retry=settings.fetch_retry,
            clock=clock,
        )

    def cached(self, domain: str) -> StsPolicy | None:
        """The policy held for `domain` now (not expired), without asking anything."""
        entry = self._live(domain.lower().rstrip("."))
        return entry.policy if entry else None

    async def lookup(self, resolver: Resolver, domain: str) -> StsLookup:
        domain = domain.lower().rstrip(".")
        entry = self._live(domain)
        txt_id, txt_problem = await _txt_id(resolver, domain)
        if txt_id is None:
            if entry is not None:
                return StsLookup(domain, entry.policy, StsSource.KEPT, txt_problem)
            return StsLookup(domain, None, StsSource.NONE, txt_problem)
        if entry is not None and entry.policy_id == txt_id:
            return StsLookup(domain, entry.policy, StsSource.CACHED)
        failed = self._failed_until.get(domain)
        if failed is not None and failed[0] > self._clock():
            problem = f"policy fetch failed recently: {failed[1]}"
        else:
            self._failed_until.pop(domain, None)
            fetched = await self._fetch_once(resolver, domain)
            if fetched.policy is not None:
                self._store(domain, txt_id, fetched.policy)
                return StsLookup(domain, fetched.policy, StsSource.FETCHED)
            problem = f"policy fetch failed: {fetched.error}"
            self._failed_until[domain] = (self._clock() + self._fetch_retry, fetched.error or "")
            while len(self._failed_until) > self._max_entries:
                self._failed_until.pop(next(iter(self._failed_until)))
        if entry is not None:
            return StsLookup(domain, entry.policy, StsSource.KEPT, problem)
        return StsLookup(domain, None, StsSource.NONE, problem)

    def _live(self, domain: str) -> _Entry | None:
        entry = self._entries.get(domain)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[domain]
            return None
        self._entries.move_to_end(domain)
        return entry

    def _store(self, domain: str, policy_id: str, policy: StsPolicy) -> None:
        if self._max_entries <= 0:
            return
        self._entries[domain] = _Entry(policy_id, policy, self._clock() + policy.max_age)
        self._entries.move_to_end(domain)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def _fetch_once(self, resolver: Resolver, domain: str) -> FetchedPolicy:
        """One fetch per domain at a time: concurrent lookups wait for the same result."""
        running = self._in_flight.get(domain)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[FetchedPolicy] = asyncio.get_running_loop().create_future()
        self._in_flight[domain] = future
        try:
            result = await self._fetch(resolver, domain)
            future.set_result(result)
            return result
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so no waiter-less future logs it
            raise
        finally:
            del self._in_flight[domain]


async def _txt_id(resolver: Resolver, domain: str) -> tuple[str | None, str]:
    """The policy id of the domain's `_mta-sts` TXT record, or None and why (RFC 8461 §3.1: records not
    starting with `v=STSv1` are ignored; none or several left means no MTA-STS)."""
    name = f"_mta-sts.{domain}"
    try:
        records = await resolver.txt(name)
    except NxDomain:
        return None, f"{name} does not exist"
    except DnsError as error:
        return None, f"{name} lookup failed: {error}"
    texts = [record.text for record in records if record.text.startswith("v=STSv1")]
    if len(texts) != 1:
        return None, f"{name} has {len(texts)} STSv1 records" if texts else f"{name} has no STSv1 record"
    try:
        return parse_sts_txt(texts[0]).id, ""
    except MtaStsError as error:
        return None, f"{name}: {error}"


def sts_fetcher(settings: MtaStsSettings) -> StsFetch:
    """The policy fetch of `[mta_sts]`: verified HTTPS (system trust plus `ca_file`) on `policy_port`,
    bounded by `fetch_timeout`; plain HTTP when `policy_https` is false. Raises OSError or ssl.SSLError
    at once when `ca_file` cannot be read."""
    context: ssl.SSLContext | None = None
    if settings.policy_https:
        context = ssl.create_default_context()
        if settings.ca_file:
            context.load_verify_locations(cafile=settings.ca_file)

    async def fetch(resolver: Resolver, domain: str) -> FetchedPolicy:
        return await fetch_sts_policy(
            resolver, domain, port=settings.policy_port, ssl_context=context, timeout=settings.fetch_timeout
        )

    return fetch
