"""SPF authentication (RFC 7208): `check_host()` for the connecting client, through Postroom's resolver.

`check_spf(resolver, client_ip, mail_from, helo, receiver=...)` checks the identity RFC 7208 §2.3-2.4
names: the domain of MAIL FROM, or for the null sender `postmaster@<HELO>` (identity "helo"); a HELO that
is not a domain name gives none. `check_host()` is the function of §4 itself, for callers that choose the
domain. Both return an `SpfVerdict` and never raise for anything the DNS or a record does:

- `mechanism` is the term that decided (`-all`, `ip4:192.0.2.0/24`, `include:_spf.example.com`), or
  `default` when none matched (neutral); for a permerror, the term at fault when there is one;
- `explanation` is, for a fail, the text `exp=` points at, macro-expanded (§6.2), or the default
  explanation when there is no `exp=` or its lookup or text is unusable; for none, temperror and
  permerror, the reason (for the log and the trace, not for the remote client); empty otherwise.

Limits (§4.6.4), each counted over the whole evaluation, includes and redirects included: at most
`MAX_LOOKUPS` DNS-querying terms (include, a, mx, ptr, exists, redirect; counted as they are reached, so a
record whose match comes first is not penalised for terms after it) and `MAX_VOID_LOOKUPS` of them
finding nothing (NXDOMAIN or no records), else permerror; an `mx` whose name has more than `MAX_MX_HOSTS`
exchanges is a permerror; `ptr` and `%{p}` look at the first `MAX_PTR_NAMES` names only. The `exp=` lookup
is not counted. A DNS timeout or failure (SERVFAIL, REFUSED) is temperror, except where §5.5 says to go on
(the PTR lookups of `ptr` and `%{p}`) and for `exp=` (the default explanation is used). The whole
evaluation is bounded by `MAX_SECONDS` (§4.6.4 asks for at least 20), then temperror: the clock is read
before each DNS-querying term (a timer per message would cost more than the check itself), and each
lookup is bounded by the resolver's timeout, so an evaluation ends at most one term's lookups late.

Fast path: every lookup goes through the resolver's cache, parsed records are kept by their text
(`RECORD_CACHE_SIZE` of them, each at most `CACHED_RECORD_LENGTH` characters: a few megabytes at worst),
and nothing leaves the event loop; the addresses of several MX or PTR names are
asked for together. The parser, macro expansion and the lookup counting limits are in `postroom.dns.spf`.

*Security:* the records, the names they lead to and the explanation come from the DNS, the sender and
HELO from the SMTP client: all untrusted. Records are parsed against the grammar before anything is
looked up; the limits above bound the queries one message can cause (a hostile record cannot make the
node query more than ~10 names per term, 10 terms per message); names built by macros are checked by the
resolver before any query (an invalid one is a lookup that found nothing). The explanation is printable
ASCII by its grammar, but the sender's local-part and the HELO are expanded into it: unprintable
characters are replaced and it is cut at `MAX_EXPLANATION_LENGTH`, so it may go into an SMTP reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import idna

from postroom.dns.resolver import DnsError, NxDomain, Resolver, TxtRecord
from postroom.dns.spf import (
    MAX_DOMAIN_LENGTH,
    MAX_LOOKUPS,
    MAX_MX_HOSTS,
    MAX_VOID_LOOKUPS,
    MacroValues,
    SpfSyntaxError,
    SpfTerm,
    expand_domain_spec,
    expand_macros,
    is_spf_record,
    macro_letters,
    parse_spf,
)
from postroom.model.verdicts import SpfResult, SpfVerdict

MAX_PTR_NAMES = 10  # names of a PTR answer whose addresses are looked up (RFC 7208 §4.6.4)
MAX_SECONDS = 20.0  # one whole check_host(), lookups included (RFC 7208 §4.6.4: at least 20 s)
MAX_EXPLANATION_LENGTH = 400  # characters of an explanation kept: it must fit in an SMTP reply line
RECORD_CACHE_SIZE = 1024  # parsed records kept by their text
CACHED_RECORD_LENGTH = 512  # characters of the longest record kept parsed (longer ones are parsed each time)
DEFAULT_EXPLANATION = "%{c} is not allowed to send mail from %{o} (SPF)"  # a macro-string (RFC 7208 §6.2)

_UNPRINTABLE = re.compile(r"[^ -~]")
_QUALIFIER_RESULTS = {
    "+": SpfResult.PASS,
    "-": SpfResult.FAIL,
    "~": SpfResult.SOFTFAIL,
    "?": SpfResult.NEUTRAL,
}

Address = IPv4Address | IPv6Address


async def check_spf(
    resolver: Resolver,
    client_ip: str,
    mail_from: str,
    helo: str,
    *,
    receiver: str,
    default_explanation: str = DEFAULT_EXPLANATION,
) -> SpfVerdict:
    """SPF for one SMTP transaction: MAIL FROM's domain, or for the null sender (`mail_from == ""`)
    `postmaster@<helo>` with identity "helo". `receiver` is this host's name (the `%{r}` macro).
    ValueError when `client_ip` is not an IP address."""
    if mail_from:
        return await check_host(
            resolver,
            client_ip,
            mail_from.rpartition("@")[2],
            mail_from,
            helo=helo,
            receiver=receiver,
            default_explanation=default_explanation,
        )
    return await check_host(
        resolver,
        client_ip,
        helo,
        f"postmaster@{helo}",
        helo=helo,
        receiver=receiver,
        identity="helo",
        default_explanation=default_explanation,
    )


async def check_host(
    resolver: Resolver,
    client_ip: str,
    domain: str,
    sender: str,
    *,
    helo: str,
    receiver: str,
    identity: str = "mailfrom",
    default_explanation: str = DEFAULT_EXPLANATION,
) -> SpfVerdict:
    """RFC 7208 §4 `check_host(<ip>, <domain>, <sender>)`; see the module docstring for the verdict.

    `default_explanation` is a macro-string used for a fail whose record gives no usable `exp=`.
    ValueError when `client_ip` is not an IP address."""
    ip = ip_address(client_ip)
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # RFC 7208 §5: an IPv4-mapped address is checked as IPv4

    def verdict(result: SpfResult, mechanism: str = "", explanation: str = "") -> SpfVerdict:
        return SpfVerdict(result, domain, identity, client_ip, mechanism, explanation)

    name = _domain_name(domain)
    if name is None:
        return verdict(SpfResult.NONE, explanation=f"{_printable(domain)!r} is not a valid domain name")
    local_part, _, sender_domain = sender.rpartition("@")
    values = MacroValues(
        sender=f"{local_part or 'postmaster'}@{sender_domain}",  # RFC 7208 §4.3
        domain=name,
        ip=ip,
        helo=helo,
        receiver=receiver or "unknown",
        timestamp=int(time.time()),
    )
    evaluation = _Evaluation(resolver, ip)
    try:
        decided = await evaluation.check_host(values)
        if decided.result is not SpfResult.FAIL:
            return verdict(decided.result, decided.mechanism, decided.reason)
        explanation = await evaluation.explain(decided, default_explanation)
        return verdict(SpfResult.FAIL, decided.mechanism, explanation)
    except _PermError as error:
        return verdict(SpfResult.PERMERROR, error.term, error.reason)
    except _TempError as error:
        return verdict(SpfResult.TEMPERROR, error.term, error.reason)


# -- the evaluation


class _PermError(Exception):
    """Ends the evaluation with permerror; `term` is the one at fault ("" when none is)."""

    def __init__(self, term: str, reason: str) -> None:
        super().__init__(reason)
        self.term = term
        self.reason = reason


class _TempError(Exception):
    """Ends the evaluation with temperror (a DNS lookup failed)."""

    def __init__(self, term: str, reason: str) -> None:
        super().__init__(reason)
        self.term = term
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Decided:
    """What one check_host() concluded: pass, fail, softfail, neutral or none (errors are raised).

    `exp` and `values` are those of the record whose term decided, for its explanation (§6.2: neither the
    `exp=` of a record that redirected here nor that of an included one).
    """

    result: SpfResult
    mechanism: str = ""
    exp: SpfTerm | None = None
    values: MacroValues | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A parsed record and what its terms need at evaluation, worked out once per record text."""

    mechanisms: tuple[tuple[SpfTerm, IPv4Network | IPv6Network | tuple[int, int] | None], ...]
    redirect: SpfTerm | None  # None also when the record has `all` (RFC 7208 §6.1)
    exp: SpfTerm | None


def _compile(text: str) -> _Compiled | SpfSyntaxError:
    """The record in `text`, or the syntax error that makes it a permerror; cached when short."""
    return _compile_cached(text) if len(text) <= CACHED_RECORD_LENGTH else _compile_record(text)


def _compile_record(text: str) -> _Compiled | SpfSyntaxError:
    try:
        record = parse_spf(text)
    except SpfSyntaxError as error:
        return error
    mechanisms: list[tuple[SpfTerm, IPv4Network | IPv6Network | tuple[int, int] | None]] = []
    redirect = exp = None
    for term in record.terms:
        if term.is_modifier:
            if term.name == "redirect":
                redirect = term
            elif term.name == "exp":
                exp = term
        elif term.name in ("ip4", "ip6"):
            mechanisms.append((term, term.network))
        elif term.name in ("a", "mx"):
            mechanisms.append((term, term.prefix_lengths))
        else:
            mechanisms.append((term, None))
    if record.all_term is not None:
        redirect = None
    return _Compiled(tuple(mechanisms), redirect, exp)


_compile_cached = lru_cache(maxsize=RECORD_CACHE_SIZE)(_compile_record)


class _Evaluation:
    """The state of one check_host() and everything it recurses into: the counts the limits apply to,
    and what the PTR lookups found (the same for every `ptr` term and `%{p}`)."""

    def __init__(self, resolver: Resolver, ip: Address) -> None:
        self._resolver = resolver
        self._ip = ip
        self._deadline = time.monotonic() + MAX_SECONDS
        self._lookups = 0
        self._void_lookups = 0
        self._ptr_names: list[str] | None = None  # None: not asked yet
        self._ptr_failed = False
        self._validated: list[str] | None = None

    async def check_host(self, values: MacroValues) -> _Decided:
        """Evaluate the record of `values.domain` (§4.4-4.7), recursing through include and redirect."""
        domain = values.domain
        try:
            records = await self._resolver.txt(domain)
        except NxDomain:
            return _Decided(SpfResult.NONE, reason=f"{domain} does not exist")
        except DnsError as error:
            raise _TempError("", f"the SPF record of {domain} could not be looked up: {error}") from error
        texts = _spf_texts(records)
        if not texts:
            return _Decided(SpfResult.NONE, reason=f"{domain} publishes no SPF record")
        if len(texts) > 1:
            raise _PermError("", f"{domain} publishes {len(texts)} SPF records where one is allowed")
        compiled = _compile(texts[0])
        if isinstance(compiled, SpfSyntaxError):
            raise _PermError(compiled.term, f"the SPF record of {domain} is invalid: {compiled}")
        for term, argument in compiled.mechanisms:
            if await self._matches(term, argument, values):
                return _Decided(_QUALIFIER_RESULTS[term.qualifier], term.text, compiled.exp, values)
        if compiled.redirect is None:
            return _Decided(SpfResult.NEUTRAL, "default", compiled.exp, values)
        redirect = compiled.redirect
        self._count(redirect)
        target = await self._target(redirect, values)
        decided = await self.check_host(replace(values, domain=target))
        if decided.result is SpfResult.NONE:
            raise _PermError(redirect.text, f"the redirect finds no SPF record: {decided.reason}")
        return decided

    async def _matches(
        self, term: SpfTerm, argument: IPv4Network | IPv6Network | tuple[int, int] | None, values: MacroValues
    ) -> bool:
        """Whether one mechanism matches the client (§5); raises for errors."""
        name = term.name
        if name == "all":
            return True
        if isinstance(argument, IPv4Network | IPv6Network):  # ip4, ip6
            return self._ip in argument
        self._count(term)
        if name == "include":
            target = await self._target(term, values)
            decided = await self.check_host(replace(values, domain=target))
            if decided.result is SpfResult.NONE:
                raise _PermError(term.text, f"the include finds no SPF record: {decided.reason}")
            return decided.result is SpfResult.PASS
        target = await self._target(term, values) if term.value is not None else values.domain
        if name == "a":
            assert isinstance(argument, tuple)
            addresses = await self._addresses(term, target, void=True)
            return any(self._in_prefix(address, argument) for address in addresses)
        if name == "mx":
            assert isinstance(argument, tuple)
            return await self._mx_matches(term, target, argument)
        if name == "ptr":
            return await self._ptr_matches(term, target)
        # exists: an A lookup whatever the client's address family (§5.7)
        try:
            found = await self._resolver.a(target)
        except NxDomain:
            found = []
        except DnsError as error:
            raise _TempError(term.text, f"{term.text}: {error}") from error
        if not found:
            self._void(term)
        return bool(found)

    async def _mx_matches(self, term: SpfTerm, target: str, lengths: tuple[int, int]) -> bool:
        try:
            exchanges = await self._resolver.mx(target)
        except NxDomain:
            exchanges = []
        except DnsError as error:
            raise _TempError(term.text, f"{term.text}: {error}") from error
        if not exchanges:
            self._void(term)  # and no fallback to the A record (§5.4)
            return False
        if len(exchanges) > MAX_MX_HOSTS:
            raise _PermError(
                term.text,
                f"{target} has {len(exchanges)} MX hosts where RFC 7208 §4.6.4 allows {MAX_MX_HOSTS}",
            )
        hosts = [exchange.exchange for exchange in exchanges if not exchange.is_null]
        answers = await _together([self._addresses(term, host, void=False) for host in hosts])
        for answer in answers:  # in order: what a one-by-one walk would have met first decides
            if isinstance(answer, _TempError):
                raise answer
            assert not isinstance(answer, DnsError)  # _addresses turns them into _TempError
            if any(self._in_prefix(address, lengths) for address in answer):
                return True
        return False

    async def _ptr_matches(self, term: SpfTerm, target: str) -> bool:
        names = await self._ptr()
        if names is None:
            return False  # a DNS error on the PTR lookup: no match (§5.5)
        if not names:
            self._void(term)
            return False
        suffix = "." + target.lower()
        return any(name == target.lower() or name.endswith(suffix) for name in await self._validated_names())

    async def _addresses(
        self, term: SpfTerm, name: str, *, void: bool
    ) -> list[IPv4Address] | list[IPv6Address]:
        """The addresses of `name` in the client's family; NXDOMAIN (or a name that cannot exist) is none."""
        try:
            if isinstance(self._ip, IPv4Address):
                found: list[IPv4Address] | list[IPv6Address] = await self._resolver.a(name)
            else:
                found = await self._resolver.aaaa(name)
        except NxDomain:
            found = []
        except DnsError as error:
            raise _TempError(term.text, f"{term.text}: {error}") from error
        if void and not found:
            self._void(term)
        return found

    def _in_prefix(self, address: Address, lengths: tuple[int, int]) -> bool:
        if isinstance(self._ip, IPv4Address):
            bits, length = 32, lengths[0]
        else:
            bits, length = 128, lengths[1]
        return address.version == self._ip.version and (int(address) ^ int(self._ip)) >> (bits - length) == 0

    # -- PTR: the mechanism and %{p}

    async def _ptr(self) -> list[str] | None:
        """The client's names (the first MAX_PTR_NAMES), [] when it has none, None on a DNS error."""
        if self._ptr_names is None and not self._ptr_failed:
            try:
                self._ptr_names = (await self._resolver.ptr(self._ip))[:MAX_PTR_NAMES]
            except NxDomain:
                self._ptr_names = []
            except DnsError:
                self._ptr_failed = True
        return self._ptr_names

    async def _validated_names(self) -> list[str]:
        """The client's names whose addresses include the client (§5.5); a name whose lookup fails is
        skipped."""
        if self._validated is None:
            names = await self._ptr() or []
            answers = await _together([self._name_addresses(name) for name in names])
            self._validated = [
                name
                for name, answer in zip(names, answers, strict=True)
                if isinstance(answer, list) and self._ip in answer
            ]
        return self._validated

    async def _name_addresses(self, name: str) -> list[IPv4Address] | list[IPv6Address]:
        if isinstance(self._ip, IPv4Address):
            return await self._resolver.a(name)
        return await self._resolver.aaaa(name)

    async def _validated_name(self, domain: str) -> str:
        """`%{p}` (§7.3): <domain> itself if validated, else a validated subdomain of it, else any
        validated name, else "unknown"."""
        names = await self._validated_names()
        domain = domain.lower()
        for candidate in names:
            if candidate == domain:
                return candidate
        for candidate in names:
            if candidate.endswith("." + domain):
                return candidate
        return names[0] if names else "unknown"

    # -- names, counts, explanation

    async def _target(self, term: SpfTerm, values: MacroValues) -> str:
        """The expanded domain-spec of a term (its value), as a name to look up."""
        assert term.value is not None
        return expand_domain_spec(term.value, await self._with_validated_name(term.value, values))

    def _count(self, term: SpfTerm) -> None:
        """Count a DNS-querying term against the limits of §4.6.4, before its lookups."""
        if time.monotonic() > self._deadline:
            raise _TempError(term.text, f"the evaluation took longer than {MAX_SECONDS:g} s")
        self._lookups += 1
        if self._lookups > MAX_LOOKUPS:
            raise _PermError(
                term.text, f"more than {MAX_LOOKUPS} DNS-querying terms (RFC 7208 §4.6.4) at {term.text}"
            )

    def _void(self, term: SpfTerm) -> None:
        self._void_lookups += 1
        if self._void_lookups > MAX_VOID_LOOKUPS:
            raise _PermError(
                term.text,
                f"more than {MAX_VOID_LOOKUPS} lookups found nothing (RFC 7208 §4.6.4) at {term.text}",
            )

    async def explain(self, decided: _Decided, default: str) -> str:
        """The explanation of a fail (§6.2): the record's `exp=` text, or `default` when it has none or
        anything about it is unusable (no single TXT record, a DNS error, not an explain-string). Its
        lookup is not counted against the limits."""
        assert decided.values is not None
        values = decided.values
        if decided.exp is not None:
            text = await self._explanation_text(decided.exp, values)
            if text is not None:
                with contextlib.suppress(SpfSyntaxError):
                    values_p = await self._with_validated_name(text, values)
                    return _clean(expand_macros(text, values_p, explanation=True))
        try:
            return _clean(
                expand_macros(default, await self._with_validated_name(default, values), explanation=True)
            )
        except SpfSyntaxError:
            return _clean(default)

    async def _explanation_text(self, exp: SpfTerm, values: MacroValues) -> str | None:
        """The one TXT record `exp=` names, when there is exactly one and it is ASCII; else None."""
        try:
            records = await self._resolver.txt(await self._target(exp, values))
        except DnsError:
            return None
        if len(records) != 1:
            return None
        try:
            return records[0].data.decode("ascii")
        except UnicodeDecodeError:
            return None

    async def _with_validated_name(self, text: str, values: MacroValues) -> MacroValues:
        """`values` with `%{p}` found, when `text` uses it (it takes lookups)."""
        if "%" not in text or "p" not in macro_letters(text):
            return values
        return replace(values, validated_name=await self._validated_name(values.domain))


_Addresses = list[IPv4Address] | list[IPv6Address]


async def _together(lookups: Sequence[Awaitable[_Addresses]]) -> list[_Addresses | DnsError | _TempError]:
    """The outcomes of several lookups asked at once (a single one without a task), in order: the
    addresses, or the DNS failure; anything else raised propagates."""
    if len(lookups) == 1:
        try:
            return [await lookups[0]]
        except (DnsError, _TempError) as error:
            return [error]
    outcomes: list[_Addresses | DnsError | _TempError] = []
    for outcome in await asyncio.gather(*lookups, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, DnsError | _TempError):
            raise outcome
        outcomes.append(outcome)
    return outcomes


def _spf_texts(records: list[TxtRecord]) -> list[str]:
    """The SPF records among a name's TXT records (§4.5), their strings joined (§3.3)."""
    return [record.text for record in records if is_spf_record(record.text)]


def _domain_name(domain: str) -> str | None:
    """`domain` as a name to look up, or None when it is malformed (§4.3): a literal, a label empty or
    over 63 octets, over 253 characters, or a single label. An internationalized name becomes A-labels."""
    name = domain.removesuffix(".")
    if name.startswith("[") or not name:
        return None
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    labels = name.split(".")
    if len(labels) < 2 or len(name) > MAX_DOMAIN_LENGTH or any(not 0 < len(label) <= 63 for label in labels):
        return None
    return name


def _clean(text: str) -> str:
    """An explanation fit for an SMTP reply: printable ASCII, at most MAX_EXPLANATION_LENGTH."""
    return _UNPRINTABLE.sub("?", text[:MAX_EXPLANATION_LENGTH])


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)
