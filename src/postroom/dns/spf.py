"""SPF records (RFC 7208): parse a published `v=spf1` record, expand its macros, and walk its includes to
find what breaks it.

`parse_spf` checks a record against the RFC 7208 §12 grammar and raises `SpfSyntaxError` naming the
first term a receiver would return permerror for: a bad version, an unknown mechanism or qualifier, an
ip4/ip6 network or prefix length out of range, a domain-spec missing, with an empty label or not ending
in a top-level label, a malformed macro (§7.1; `c`, `r` and `t` are for explanation text only, so never
in a domain-spec), `redirect=` or `exp=` given twice. Unknown modifiers are kept, as §6 asks. A parsed
`SpfTerm` also gives what evaluation needs: the prefix lengths of `a` and `mx` (`prefix_lengths`), the
network of `ip4` and `ip6` (`network`).

`expand_macros` expands a macro-string (§7.3) with the `MacroValues` of one evaluation, checking its
syntax as it goes (a domain-spec's was checked by the parser; an explanation fetched by `exp=` is checked
here, and may hold spaces and the letters `c`, `r`, `t`); `expand_domain_spec` also makes the result a
name to look up (no trailing dot, cut from the left to 253 characters). `protection.spf` evaluates
records with them; nothing here does I/O for them.

`analyze_spf` walks a parsed record as a receiver would evaluate it, through includes and the redirect
(ignored when the record has `all`, §6.1), and reports every problem it finds as an `SpfProblem` with a
stable code, never only the first: the §4.6.4 limits (10 DNS-querying terms, 2 void lookups, 10 MX
hosts), include loops, include or redirect targets without exactly one parsable SPF record, `ptr`, and
DNS failures. It never raises for the DNS: a lookup without an answer is reported as
`SpfProblemCode.DNS_UNAVAILABLE` and the walk goes on, so the result is then incomplete. It does not stop
at the lookup limit either (the admin sees the real total), but it is bounded: it does not descend more
than `MAX_DEPTH` includes deep nor ask more than `MAX_QUERIES` questions, and says so when it stops.
Terms whose domain-spec holds a macro are counted but not followed: macros expand from a message
(sender, client IP) that a diagnosis does not have. Every lookup is `fresh=True`: a diagnosis must see
what is published now, not what the cache saw an hour ago.

Written here rather than taken from pyspf or checkdmarc: those evaluate with their own synchronous
resolvers against the system's nameservers and stop at the first permerror, while this walk must go
through Postroom's asynchronous `Resolver` seam (the configured nameservers; in tests, a server on
loopback) and report every problem at once.

*Security:* records come from the DNS and are untrusted: they are split and matched against the grammar,
never evaluated; the walk never expands macros. The walk is bounded in depth and in queries, so a hostile
chain of includes cannot make it run long, and each name it follows is validated by the resolver.
Error messages quote the offending term with unprintable characters escaped. Macro expansion is linear in
the text and its values; a part count of any size (`%{d99999999}`) means "all parts", never a huge
integer. An expanded explanation is printable ASCII from the record, but its values come from the SMTP
client (the local-part, HELO): callers bound and clean it before showing it to anyone.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sized
from dataclasses import dataclass
from enum import Enum, StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TypeVar
from urllib.parse import quote

from postroom.dns.resolver import DnsError, NxDomain, Resolver

MAX_LOOKUPS = 10  # DNS-querying terms one evaluation may use (RFC 7208 §4.6.4)
MAX_VOID_LOOKUPS = 2  # of which may find nothing (NXDOMAIN or no records) (RFC 7208 §4.6.4)
MAX_MX_HOSTS = 10  # hosts of one mx mechanism whose addresses may be looked up (RFC 7208 §4.6.4)
MAX_DEPTH = 20  # includes and redirects followed one inside another before the walk stops descending
MAX_QUERIES = 100  # DNS questions one analysis asks at most
MAX_DOMAIN_LENGTH = 253  # characters of an expanded domain-spec; more are cut from the left (RFC 7208 §7.3)

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
QUALIFIERS = ("+", "-", "~", "?")
_LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})  # and the redirect modifier

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)", re.DOTALL)
# A mechanism: what comes before its name (its qualifier), the name, then ":" or "/" and the rest.
_MECHANISM = re.compile(r"(?P<prefix>[^A-Za-z0-9]*)(?P<name>[^:/]*)(?P<argument>.*)", re.DOTALL)
# A macro-expand (RFC 7208 §7.1): %{letter digits [r] delimiters} or %% %_ %-.
_MACRO = re.compile(
    r"%(?:\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<reverse>[rR]?)(?P<delimiters>[.+,/_=-]*)\}"
    r"|(?P<escape>[%_-]))"
)
_MACRO_ESCAPES = {"%": "%", "_": " ", "-": "%20"}
# macro-literal (%x21-24 / %x26-7E); an explain-string may also hold spaces (RFC 7208 §7.1, §6.2).
_LITERAL = re.compile(r"[!-$&-~]*")
_EXPLAIN_LITERAL = re.compile(r"[ !-$&-~]*")
_MACRO_LETTERS = frozenset("slodiphcrtv")
_EXPLANATION_ONLY_LETTERS = frozenset("crt")  # RFC 7208 §7.1: allowed only in explanation text
_DOMAIN_SPEC_LETTERS = _MACRO_LETTERS - _EXPLANATION_ONLY_LETTERS
_TOPLABEL = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9]")
# a and mx: [":" domain-spec] [ip4-cidr-length] ["/" ip6-cidr-length] (RFC 7208 §12: the lengths come
# last and are digits), the shortest domain-spec first: a domain-spec may itself hold "/" and ":".
_DUAL_CIDR = re.compile(r"(?::(?P<spec>.*?))?(?:/(?P<ip4>[0-9]+))?(?://(?P<ip6>[0-9]+))?", re.DOTALL)
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")  # no leading zeros (RFC 7208 §5.6)
_NETWORK = re.compile(r"(?P<address>[^/]*)(?:/(?P<length>[^/]*))?", re.DOTALL)


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: the text begins with exactly `v=spf1` (any case), then a space or its end."""
    return text[:6].lower() == "v=spf1" and text[6:7] in ("", " ")


class SpfSyntaxError(ValueError):
    """A record a receiver would reject (permerror); `term` is the offending text, `reason` follows it.

    `str()` reads as one sentence for an admin: `'ip4:10.0.0.300' is not a valid IPv4 network`.
    """

    def __init__(self, term: str, reason: str) -> None:
        super().__init__(f"'{_printable(term)}' {reason}")
        self.term = term
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SpfTerm:
    """One term of a record.

    `qualifier` is `+ - ~ ?` (`+` when omitted) for a mechanism, `""` for a modifier. `name` is lower
    case. `value` is what follows `:` or `=`, None when absent: for `a` and `mx` the domain-spec without
    the prefix lengths (those stay in `text`), for `ip4` and `ip6` the network with its prefix length.
    """

    text: str
    qualifier: str
    name: str
    value: str | None
    is_modifier: bool

    @property
    def prefix_lengths(self) -> tuple[int, int]:
        """For `a` and `mx`: the IPv4 and IPv6 prefix lengths written, 32 and 128 when not written."""
        argument = _MECHANISM.fullmatch(self.text)
        match = _DUAL_CIDR.fullmatch(argument.group("argument")) if argument is not None else None
        if match is None or self.name not in ("a", "mx"):
            raise ValueError(f"{self.text!r} is not an a or mx mechanism")
        ip4, ip6 = match.group("ip4"), match.group("ip6")
        return (int(ip4) if ip4 is not None else 32, int(ip6) if ip6 is not None else 128)

    @property
    def network(self) -> IPv4Network | IPv6Network:
        """For `ip4` and `ip6`: the network, host bits cleared (`ip4:192.0.2.1/24` is 192.0.2.0/24)."""
        if self.name not in ("ip4", "ip6") or self.value is None:
            raise ValueError(f"{self.text!r} is not an ip4 or ip6 mechanism")
        return ip_network(self.value, strict=False)


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A parsed record: its text and its terms (mechanisms and modifiers) in order, without `v=spf1`."""

    text: str
    terms: tuple[SpfTerm, ...]

    @property
    def all_term(self) -> SpfTerm | None:
        return next((term for term in self.terms if term.name == "all" and not term.is_modifier), None)

    @property
    def redirect(self) -> str | None:
        """The domain-spec of `redirect=`, or None."""
        term = _redirect_term(self)
        return term.value if term is not None else None

    @property
    def includes(self) -> tuple[str, ...]:
        """The domain-specs of the include mechanisms, in order, as written."""
        return tuple(term.value for term in self.terms if term.name == "include" and term.value is not None)


def parse_spf(text: str) -> SpfRecord:
    """The record in `text`; SpfSyntaxError for the first term a receiver would reject."""
    if not is_spf_record(text):
        first = text.split(" ", 1)[0]
        raise SpfSyntaxError(first, "is not an SPF record: it must begin with 'v=spf1' and a space")
    terms: list[SpfTerm] = []
    seen_modifiers: set[str] = set()
    for word in text[6:].split(" "):
        if not word:
            continue  # terms are separated by one or more spaces
        term = _parse_term(word)
        if term.name in ("redirect", "exp") and term.is_modifier:
            if term.name in seen_modifiers:
                raise SpfSyntaxError(word, f"repeats the {term.name}= modifier, which may appear only once")
            seen_modifiers.add(term.name)
        terms.append(term)
    return SpfRecord(text=text, terms=tuple(terms))


def _parse_term(word: str) -> SpfTerm:
    modifier = _MODIFIER.fullmatch(word)
    if modifier is None:
        return _parse_mechanism(word)
    name, value = modifier.group(1).lower(), modifier.group(2)
    if name in ("redirect", "exp"):
        _check_domain_spec(word, value)
    else:
        _check_macro_string(word, value, _MACRO_LETTERS)  # unknown modifiers are never expanded
    return SpfTerm(text=word, qualifier="", name=name, value=value, is_modifier=True)


def _parse_mechanism(word: str) -> SpfTerm:
    parts = _MECHANISM.fullmatch(word)
    assert parts is not None  # every part may be empty
    prefix, name, argument = parts.group("prefix"), parts.group("name").lower(), parts.group("argument")
    if name not in MECHANISMS:
        if _MODIFIER.fullmatch(word[len(prefix) :]):
            raise SpfSyntaxError(word, "is a modifier with a qualifier: modifiers take none")
        raise SpfSyntaxError(word, f"is not a known mechanism (known: {', '.join(MECHANISMS)})")
    if prefix not in ("", *QUALIFIERS):
        raise SpfSyntaxError(word, f"has the qualifier {prefix!r}: a mechanism takes one of + - ~ ?, or none")
    qualifier = prefix or "+"

    value: str | None
    if name == "all":
        if argument:
            raise SpfSyntaxError(word, "takes no argument: write 'all' alone")
        value = None
    elif name in ("include", "exists", "ptr"):
        if argument.startswith("/"):
            raise SpfSyntaxError(word, f"takes no prefix length: {name} matches names, not networks")
        value = argument[1:] if argument else None
        if value is not None or name != "ptr":  # ptr alone means the current domain
            _check_domain_spec(word, value or "")
    elif name in ("a", "mx"):
        value = _parse_dual_cidr(word, argument)
    else:
        value = _parse_network(word, name, argument)
    return SpfTerm(text=word, qualifier=qualifier, name=name, value=value, is_modifier=False)


def _parse_dual_cidr(word: str, argument: str) -> str | None:
    """The domain-spec of an a or mx mechanism (None when absent), its prefix lengths checked."""
    match = _DUAL_CIDR.fullmatch(argument)
    if match is None:  # without a domain-spec, what follows the name can only be prefix lengths
        raise SpfSyntaxError(
            word,
            "has a malformed prefix length: write a or mx, then [:<domain>][/<IPv4 length>][//<IPv6 length>]",
        )
    spec, ip4, ip6 = match.group("spec"), match.group("ip4"), match.group("ip6")
    if spec is not None:
        _check_domain_spec(word, spec)
    if ip4 is not None:
        _check_prefix_length(word, ip4, 32, "IPv4")
    if ip6 is not None:
        _check_prefix_length(word, ip6, 128, "IPv6")
    return spec


def _parse_network(word: str, name: str, argument: str) -> str:
    """The network of an ip4 or ip6 mechanism, as written."""
    version = "IPv4" if name == "ip4" else "IPv6"
    network = argument[1:]
    match = _NETWORK.fullmatch(network)
    if not argument.startswith(":") or not network or match is None:
        raise SpfSyntaxError(word, f"names no {version} network: write {name}:<network>[/<prefix length>]")
    address, length = match.group("address"), match.group("length")
    if not _is_address(address, IPv4Address if name == "ip4" else IPv6Address):
        raise SpfSyntaxError(word, f"is not a valid {version} network")
    if length is not None:
        _check_prefix_length(word, length, 32 if name == "ip4" else 128, version)
    return network


def _is_address(text: str, kind: type[IPv4Address] | type[IPv6Address]) -> bool:
    # A zone index (fe80::1%eth0) names an interface of one host, never a network.
    if "%" in text:
        return False
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _check_prefix_length(word: str, length: str, maximum: int, version: str) -> None:
    if not _PREFIX_LENGTH.fullmatch(length) or int(length) > maximum:
        raise SpfSyntaxError(
            word, f"has the {version} prefix length {length!r}: it must be a number from 0 to {maximum}"
        )


def _check_domain_spec(word: str, spec: str) -> None:
    """RFC 7208 §7.1 domain-spec: a macro-string ending in a macro or in `.toplabel`, no empty label."""
    if not spec:
        raise SpfSyntaxError(word, "names no domain")
    skeleton = _check_macro_string(word, spec, _DOMAIN_SPEC_LETTERS)
    name = skeleton.removesuffix(".")
    labels = name.split(".")
    if "" in labels:
        raise SpfSyntaxError(word, "has an empty label in its domain (two dots in a row, or a leading dot)")
    if any(len(label) > 63 and "%" not in label for label in labels):
        raise SpfSyntaxError(word, "has a domain label longer than 63 characters")
    if not name.endswith("%") and (len(labels) < 2 or not _TOPLABEL.fullmatch(labels[-1])):
        raise SpfSyntaxError(
            word, "does not end in a fully qualified domain name (a dot and a top-level label, or a macro)"
        )


def _check_macro_string(word: str, text: str, letters: frozenset[str]) -> str:
    """Check the macros and literals of `text`; return it with each macro replaced by `%`."""
    return "".join(
        token if isinstance(token, str) else "%" for token in _macro_tokens(word, text, letters, _LITERAL)
    )


def _macro_tokens(
    word: str, text: str, letters: frozenset[str], literal: re.Pattern[str]
) -> Iterator[str | re.Match[str]]:
    """The runs of literal text and the macros of a macro-string, in order; SpfSyntaxError at the first
    character `literal` does not allow, malformed macro, or macro letter not in `letters`."""
    position = 0
    while position < len(text):
        run = literal.match(text, position)
        assert run is not None  # the pattern matches the empty string
        if run.end() > position:
            yield run.group()
            position = run.end()
            continue
        char = text[position]
        if char != "%":
            raise SpfSyntaxError(word, f"holds the character {char!r}, not allowed in an SPF record")
        macro = _MACRO.match(text, position)
        if macro is None:
            raise SpfSyntaxError(
                word, "has a '%' that starts no valid macro (a literal percent sign is written '%%')"
            )
        letter, digits = macro.group("letter"), macro.group("digits")
        if letter is not None and letter.lower() not in letters:
            where = "only in explanation text" if letter.lower() in _MACRO_LETTERS else "nowhere"
            raise SpfSyntaxError(word, f"uses the macro letter {letter!r}, allowed {where}")
        if digits and not digits.strip("0"):
            raise SpfSyntaxError(word, f"keeps zero parts in {macro.group()!r}: the count must be 1 or more")
        yield macro
        position = macro.end()


# -- macro expansion


@dataclass(frozen=True, slots=True)
class MacroValues:
    """What the macro letters stand for in one check_host() evaluation (RFC 7208 §7.3).

    `sender` is <sender> with "postmaster" already substituted for an empty local-part (§4.3), so `l` and
    `o` are its two halves; `domain` is <domain> (`d`), the domain whose record is being evaluated;
    `ip` is <ip> (`i`, `c`, `v`), an IPv4-mapped IPv6 address already given as IPv4 (§5); `helo` is the
    HELO or EHLO argument (`h`); `validated_name` is `p` (the caller finds it: it takes DNS lookups);
    `receiver` is `r`, `timestamp` is `t` (seconds since the epoch).
    """

    sender: str
    domain: str
    ip: IPv4Address | IPv6Address
    helo: str
    validated_name: str = "unknown"
    receiver: str = "unknown"
    timestamp: int = 0

    def letter(self, letter: str) -> str:
        """The value of one lower-case macro letter, before transformers and URL escaping."""
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.sender.rpartition("@")[0]
        if letter == "o":
            return self.sender.rpartition("@")[2]
        if letter == "d":
            return self.domain
        if letter == "i":
            if isinstance(self.ip, IPv4Address):
                return str(self.ip)
            # 32 nibbles; upper case as the OpenSPF test suite (v-macro-ip6) expects, and DNS ignores.
            return ".".join(self.ip.exploded.replace(":", "").upper())
        if letter == "c":
            return str(self.ip)  # IPv6 in the RFC 5952 form
        if letter == "v":
            return "in-addr" if isinstance(self.ip, IPv4Address) else "ip6"
        if letter == "h":
            return self.helo
        if letter == "p":
            return self.validated_name
        if letter == "r":
            return self.receiver
        if letter == "t":
            return str(self.timestamp)
        raise ValueError(f"{letter!r} is not an SPF macro letter")


def macro_letters(text: str) -> frozenset[str]:
    """The macro letters `text` uses, lower case (to know whether `p`, which takes lookups, is needed)."""
    return frozenset(
        match.group("letter").lower() for match in _MACRO.finditer(text) if match.group("letter")
    )


def expand_macros(text: str, values: MacroValues, *, explanation: bool = False) -> str:
    """The macro-string `text` expanded with `values` (RFC 7208 §7.3).

    With `explanation`, `text` is an explain-string (the TXT record `exp=` names): spaces and the letters
    `c`, `r`, `t` are allowed. SpfSyntaxError when `text` breaks the grammar (a character outside
    printable ASCII, a malformed macro, a letter not allowed there).
    """
    letters, literal = (_MACRO_LETTERS, _EXPLAIN_LITERAL) if explanation else (_DOMAIN_SPEC_LETTERS, _LITERAL)
    expanded: list[str] = []
    for token in _macro_tokens(text, text, letters, literal):
        if isinstance(token, str):
            expanded.append(token)
            continue
        escape, letter = token.group("escape"), token.group("letter")
        if escape is not None:
            expanded.append(_MACRO_ESCAPES[escape])
            continue
        value = values.letter(letter.lower())
        digits, reverse, delimiters = token.group("digits"), token.group("reverse"), token.group("delimiters")
        if digits or reverse or delimiters:
            parts = re.split(f"[{re.escape(delimiters or '.')}]", value)
            if reverse:
                parts.reverse()
            if digits:
                # More parts asked than there are means all of them; a long count cannot be fewer.
                count = digits.lstrip("0")
                if len(count) < 4:
                    parts = parts[-int(count) :]
            value = ".".join(parts)
        expanded.append(quote(value, safe="") if letter.isupper() else value)
    return "".join(expanded)


def expand_domain_spec(spec: str, values: MacroValues) -> str:
    """A domain-spec expanded into the name to look up: no trailing dot, and when longer than
    `MAX_DOMAIN_LENGTH`, labels removed from the left until it fits (RFC 7208 §7.3)."""
    name = (expand_macros(spec, values) if "%" in spec else spec).removesuffix(".")
    while len(name) > MAX_DOMAIN_LENGTH and "." in name:
        name = name.partition(".")[2]
    return name


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


# -- analysis


class SpfProblemCode(StrEnum):
    """What an `SpfProblem` is about; every code but the last two means receivers return permerror."""

    TOO_MANY_LOOKUPS = "spf.too-many-lookups"
    TOO_MANY_VOID_LOOKUPS = "spf.void-lookups"
    INCLUDE_LOOP = "spf.include-loop"
    INCLUDE_WITHOUT_SPF = "spf.include-without-spf"
    INCLUDE_MULTIPLE = "spf.include-multiple"
    INCLUDE_SYNTAX = "spf.include-syntax"
    MX_TOO_MANY_HOSTS = "spf.mx-too-many-hosts"
    PTR_USED = "spf.ptr"  # a warning: the record works, but RFC 7208 §5.5 says not to use ptr
    DNS_UNAVAILABLE = "spf.dns-unavailable"  # no answer for a lookup: the analysis is incomplete


@dataclass(frozen=True, slots=True)
class SpfProblem:
    """One finding: `domain` is the one whose record holds the offending term (for the limits, the
    domain analyzed); `detail` says what was found, for an admin."""

    code: SpfProblemCode
    domain: str
    detail: str


@dataclass(frozen=True, slots=True)
class SpfAnalysis:
    """What `analyze_spf` found.

    `lookups` is the RFC 7208 §4.6.4 count of DNS-querying terms (include, a, mx, ptr, exists, redirect)
    over the whole tree, `lookup_terms` says where it comes from (`"domain: term"`, in evaluation
    order); `includes` lists each domain the walk looked up through include or redirect (whatever it
    found there) once, in the order first looked up; `problems` come with the limits first, then the
    others in evaluation order.
    """

    domain: str
    record: SpfRecord
    lookups: int
    void_lookups: int
    lookup_terms: tuple[str, ...]
    problems: tuple[SpfProblem, ...]
    includes: tuple[str, ...]


async def analyze_spf(resolver: Resolver, domain: str, record: SpfRecord) -> SpfAnalysis:
    """Walk `record`, published at `domain`, and report every problem; never raises for the DNS."""
    walk = _Walk(resolver)
    top = _normal(domain)
    await walk.record(top, record, (top,))
    limits: list[SpfProblem] = []
    if len(walk.lookup_terms) > MAX_LOOKUPS:
        # A walk cut short has always counted more than MAX_LOOKUPS: each level of depth costs one
        # lookup, and each lookup at most two queries.
        stopped = (
            f" The walk {' and '.join(walk.stopped)}, so the true count may be higher."
            if walk.stopped
            else ""
        )
        limits.append(
            SpfProblem(
                SpfProblemCode.TOO_MANY_LOOKUPS,
                top,
                f"{len(walk.lookup_terms)} DNS-querying terms where RFC 7208 §4.6.4 allows {MAX_LOOKUPS}: "
                f"receivers return permerror at the {MAX_LOOKUPS + 1}th, "
                f"'{walk.lookup_terms[MAX_LOOKUPS]}'.{stopped} Counted: {'; '.join(walk.lookup_terms)}.",
            )
        )
    if len(walk.void_terms) > MAX_VOID_LOOKUPS:
        limits.append(
            SpfProblem(
                SpfProblemCode.TOO_MANY_VOID_LOOKUPS,
                top,
                f"{len(walk.void_terms)} lookups found nothing where RFC 7208 §4.6.4 allows "
                f"{MAX_VOID_LOOKUPS}: {'; '.join(walk.void_terms)}.",
            )
        )
    return SpfAnalysis(
        domain=top,
        record=record,
        lookups=len(walk.lookup_terms),
        void_lookups=len(walk.void_terms),
        lookup_terms=tuple(walk.lookup_terms),
        problems=(*limits, *walk.problems),
        includes=tuple(walk.includes),
    )


class _NoAnswer(Enum):
    NXDOMAIN = "nxdomain"
    UNKNOWN = "unknown"  # the DNS was unavailable (reported as such) or the query budget is spent


_T = TypeVar("_T")


class _Walk:
    """The state of one analysis: what was counted, found and asked so far."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._queries = 0
        self.lookup_terms: list[str] = []
        self.void_terms: list[str] = []
        self.problems: list[SpfProblem] = []
        self.includes: dict[str, None] = {}  # an ordered set
        self.stopped: dict[str, None] = {}  # why the walk was cut short, an ordered set

    async def record(self, domain: str, record: SpfRecord, chain: tuple[str, ...]) -> None:
        """Count and follow the terms of `domain`'s record; `chain` is the domains leading to it."""
        for term in record.terms:
            if term.is_modifier or term.name not in _LOOKUP_MECHANISMS:
                continue
            self.lookup_terms.append(f"{domain}: {term.text}")
            if term.name == "ptr":
                self._problem(
                    SpfProblemCode.PTR_USED,
                    domain,
                    f"{term.text}: ptr is slow, unreliable and deprecated (RFC 7208 §5.5); "
                    "list the sending networks with ip4: and ip6: instead",
                )
            elif term.name == "include":
                await self._follow(domain, term, chain)
            else:
                await self._address_term(domain, term)
        redirect = _redirect_term(record)
        if redirect is not None and record.all_term is None:  # RFC 7208 §6.1: all makes it unreachable
            self.lookup_terms.append(f"{domain}: {redirect.text}")
            await self._follow(domain, redirect, chain)

    async def _follow(self, domain: str, term: SpfTerm, chain: tuple[str, ...]) -> None:
        """An include or redirect: fetch the target's record and walk it, unless it cannot be."""
        assert term.value is not None  # the parser requires a domain-spec for both
        if "%" in term.value:
            return
        target = _normal(term.value)
        if target in chain:
            self._problem(
                SpfProblemCode.INCLUDE_LOOP,
                domain,
                f"{term.text} loops: {' -> '.join((*chain, target))}; receivers return permerror",
            )
            return
        if len(chain) > MAX_DEPTH:
            self.stopped[f"stopped descending at depth {MAX_DEPTH}"] = None
            return
        self.includes[target] = None
        answer = await self._ask(domain, term, lambda: self._resolver.txt(target, fresh=True))
        self._is_void(domain, term, answer, "has no TXT record")
        if isinstance(answer, _NoAnswer):
            if answer is _NoAnswer.NXDOMAIN:
                self._without_spf(domain, term, f"{target} does not exist")
            return
        records = [record.text for record in answer if is_spf_record(record.text)]
        if not records:
            self._without_spf(domain, term, f"{target} publishes no SPF record")
        elif len(records) > 1:
            self._problem(
                SpfProblemCode.INCLUDE_MULTIPLE,
                domain,
                f"{term.text}: {target} publishes {len(records)} SPF records where one is allowed "
                "(RFC 7208 §4.5); receivers return permerror",
            )
        else:
            try:
                included = parse_spf(records[0])
            except SpfSyntaxError as exc:
                self._problem(
                    SpfProblemCode.INCLUDE_SYNTAX,
                    domain,
                    f"{term.text}: the record of {target} does not parse: {exc}; receivers return permerror",
                )
                return
            await self.record(target, included, (*chain, target))

    async def _address_term(self, domain: str, term: SpfTerm) -> None:
        """a, mx or exists: one lookup, void when it finds nothing."""
        spec = term.value if term.value is not None else domain
        if "%" in spec:
            return
        target = _normal(spec)
        if term.name == "mx":
            exchanges = await self._ask(domain, term, lambda: self._resolver.mx(target, fresh=True))
            if not self._is_void(domain, term, exchanges, "has no MX record"):
                assert not isinstance(exchanges, _NoAnswer)
                if len(exchanges) > MAX_MX_HOSTS:
                    self._problem(
                        SpfProblemCode.MX_TOO_MANY_HOSTS,
                        domain,
                        f"{term.text}: {target} has {len(exchanges)} MX hosts where RFC 7208 §4.6.4 "
                        f"allows {MAX_MX_HOSTS}; receivers return permerror",
                    )
            return
        addresses: list[IPv4Address] | list[IPv6Address] | _NoAnswer
        addresses = await self._ask(domain, term, lambda: self._resolver.a(target, fresh=True))
        if term.name == "a" and addresses == []:  # a matches either family; exists asks A only
            addresses = await self._ask(domain, term, lambda: self._resolver.aaaa(target, fresh=True))
        self._is_void(
            domain, term, addresses, "has no A or AAAA record" if term.name == "a" else "has no A record"
        )

    async def _ask(
        self, domain: str, term: SpfTerm, lookup: Callable[[], Awaitable[list[_T]]]
    ) -> list[_T] | _NoAnswer:
        """One question within the budget; a DNS failure is reported and gives UNKNOWN."""
        if self._queries >= MAX_QUERIES:
            self.stopped[f"stopped asking after {MAX_QUERIES} DNS queries"] = None
            return _NoAnswer.UNKNOWN
        self._queries += 1
        try:
            return await lookup()
        except NxDomain:
            return _NoAnswer.NXDOMAIN
        except DnsError as exc:
            self._problem(
                SpfProblemCode.DNS_UNAVAILABLE,
                domain,
                f"{term.text}: {exc}; the analysis is incomplete, try again later",
            )
            return _NoAnswer.UNKNOWN

    def _is_void(self, domain: str, term: SpfTerm, answer: Sized | _NoAnswer, empty: str) -> bool:
        """Whether the answer holds nothing to look at; NXDOMAIN and NODATA are counted as void."""
        if isinstance(answer, _NoAnswer):
            if answer is _NoAnswer.NXDOMAIN:
                self.void_terms.append(f"{domain}: {term.text} (the name does not exist)")
            return True
        if len(answer) == 0:
            self.void_terms.append(f"{domain}: {term.text} ({empty})")
            return True
        return False

    def _without_spf(self, domain: str, term: SpfTerm, found: str) -> None:
        self._problem(
            SpfProblemCode.INCLUDE_WITHOUT_SPF, domain, f"{term.text}: {found}; receivers return permerror"
        )

    def _problem(self, code: SpfProblemCode, domain: str, detail: str) -> None:
        self.problems.append(SpfProblem(code, domain, detail))


def _redirect_term(record: SpfRecord) -> SpfTerm | None:
    return next((term for term in record.terms if term.name == "redirect" and term.is_modifier), None)


def _normal(domain: str) -> str:
    return domain.lower().removesuffix(".")
