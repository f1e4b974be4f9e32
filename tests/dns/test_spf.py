"""SPF: the record parser fed strings, and the lookup analysis against the real test server on loopback."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest

from postroom.config.settings import DnsSettings
from postroom.dns.resolver import DnsResolver
from postroom.dns.spf import (
    MacroValues,
    SpfAnalysis,
    SpfProblemCode,
    SpfSyntaxError,
    SpfTerm,
    analyze_spf,
    expand_domain_spec,
    expand_macros,
    is_spf_record,
    macro_letters,
    parse_spf,
)
from support.dns_server import DnsTestServer, silent_nameserver
from support.garbled import garbled_spf

# -- recognising and parsing records


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=spf1 -all", True),
        ("v=spf1", True),
        ("V=SPF1 include:a.test ~all", True),
        ("v=spf1  a  ", True),
        ("v=spf10 -all", False),
        ("v=spf1\t-all", False),  # the version ends with a space or the text, nothing else
        (" v=spf1 -all", False),
        ("spf2.0/pra -all", False),
        ("v=DMARC1; p=none", False),
        ("", False),
    ],
)
def test_is_spf_record(text: str, expected: bool) -> None:
    assert is_spf_record(text) is expected


def term(text: str, qualifier: str, name: str, value: str | None = None) -> SpfTerm:
    return SpfTerm(text, qualifier, name, value, is_modifier=qualifier == "")


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("v=spf1", ()),
        ("v=spf1 -all", (term("-all", "-", "all"),)),
        (
            "V=Spf1  +A MX/24  a:mail.example.com/24//64 mx//64 ~ALL ",
            (
                term("+A", "+", "a"),
                term("MX/24", "+", "mx"),
                term("a:mail.example.com/24//64", "+", "a", "mail.example.com"),
                term("mx//64", "+", "mx"),
                term("~ALL", "~", "all"),
            ),
        ),
        (
            "v=spf1 ip4:192.0.2.1 ip4:10.0.0.1/8 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1 ?all",
            (
                term("ip4:192.0.2.1", "+", "ip4", "192.0.2.1"),
                term("ip4:10.0.0.1/8", "+", "ip4", "10.0.0.1/8"),  # host bits set: allowed, masked
                term("ip6:2001:db8::/32", "+", "ip6", "2001:db8::/32"),
                term("ip6:::ffff:192.0.2.1", "+", "ip6", "::ffff:192.0.2.1"),
                term("?all", "?", "all"),
            ),
        ),
        (
            "v=spf1 include:_spf.example.com ptr ptr:example.com. redirect=_spf.example.net",
            (
                term("include:_spf.example.com", "+", "include", "_spf.example.com"),
                term("ptr", "+", "ptr"),
                term("ptr:example.com.", "+", "ptr", "example.com."),
                term("redirect=_spf.example.net", "", "redirect", "_spf.example.net"),
            ),
        ),
        (
            "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -include:%{D2}.%% exp=explain.%{d}",
            (
                term("exists:%{ir}.%{l1r+-}._spf.%{d}", "+", "exists", "%{ir}.%{l1r+-}._spf.%{d}"),
                term("-include:%{D2}.%%", "-", "include", "%{D2}.%%"),
                term("exp=explain.%{d}", "", "exp", "explain.%{d}"),
            ),
        ),
        (  # unknown modifiers are kept (RFC 7208 §6); c, r, t may appear there, never expanded
            "v=spf1 X-Report=%{c}-%{t} empty= -all",
            (
                term("X-Report=%{c}-%{t}", "", "x-report", "%{c}-%{t}"),
                term("empty=", "", "empty", ""),
                term("-all", "-", "all"),
            ),
        ),
    ],
)
def test_valid_records_parse_into_terms(text: str, terms: tuple[SpfTerm, ...]) -> None:
    record = parse_spf(text)
    assert record.text == text
    assert record.terms == terms


def test_record_properties() -> None:
    record = parse_spf("v=spf1 include:a.test mx include:B.test redirect=r.test ~all")
    assert record.includes == ("a.test", "B.test")
    assert record.redirect == "r.test"
    assert record.all_term == term("~all", "~", "all")
    bare = parse_spf("v=spf1 a")
    assert (bare.includes, bare.redirect, bare.all_term) == ((), None, None)


@pytest.mark.parametrize(
    ("text", "term"),
    [
        # version
        ("v=spf10 -all", "v=spf10"),
        ("spf1 -all", "spf1"),
        ("", ""),
        # mechanisms and qualifiers
        ("v=spf1 include:a.test allow", "allow"),
        ("v=spf1 ipv4:192.0.2.1", "ipv4:192.0.2.1"),
        ("v=spf1 !all", "!all"),
        ("v=spf1 --all", "--all"),
        ("v=spf1 ~redirect=a.test", "~redirect=a.test"),
        ("v=spf1 all:a.test", "all:a.test"),
        # networks and prefix lengths
        ("v=spf1 ip4:10.0.0.300", "ip4:10.0.0.300"),
        ("v=spf1 ip4:010.0.0.1", "ip4:010.0.0.1"),
        ("v=spf1 ip4:10.0.0.0/33", "ip4:10.0.0.0/33"),
        ("v=spf1 ip4:10.0.0.0/08", "ip4:10.0.0.0/08"),
        ("v=spf1 ip4:10.0.0.0/", "ip4:10.0.0.0/"),
        ("v=spf1 ip4:", "ip4:"),
        ("v=spf1 ip4", "ip4"),
        ("v=spf1 ip4:2001:db8::1", "ip4:2001:db8::1"),
        ("v=spf1 ip6:2001:db8::/129", "ip6:2001:db8::/129"),
        ("v=spf1 ip6:2001:db8::g", "ip6:2001:db8::g"),
        ("v=spf1 ip6:fe80::1%eth0", "ip6:fe80::1%eth0"),
        ("v=spf1 a/33", "a/33"),
        ("v=spf1 mx:example.com//129", "mx:example.com//129"),
        ("v=spf1 a:example.com/x", "a:example.com/x"),
        ("v=spf1 ptr/24", "ptr/24"),
        ("v=spf1 a/24/64", "a/24/64"),  # an extra prefix-length segment
        ("v=spf1 mx/1/2", "mx/1/2"),
        ("v=spf1 a//64/", "a//64/"),
        ("v=spf1 mx:example.com/24/64", "mx:example.com/24/64"),
        ("v=spf1 a/", "a/"),
        ("v=spf1 a/+24", "a/+24"),
        ("v=spf1 a:example.com/\u0663", "a:example.com/\u0663"),  # digits are ASCII only
        # domain-specs
        ("v=spf1 include", "include"),
        ("v=spf1 include:", "include:"),
        ("v=spf1 exists:", "exists:"),
        ("v=spf1 a:", "a:"),
        ("v=spf1 redirect=", "redirect="),
        ("v=spf1 include:a..example.com", "include:a..example.com"),
        ("v=spf1 include:.example.com", "include:.example.com"),
        ("v=spf1 mx:example..com", "mx:example..com"),
        ("v=spf1 include:localhost", "include:localhost"),
        ("v=spf1 a:192.0.2.1", "a:192.0.2.1"),  # an address where a domain goes
        ("v=spf1 a:" + "x" * 64 + ".test", "a:" + "x" * 64 + ".test"),
        ("v=spf1 include:caf\u00e9.test", "include:caf\u00e9.test"),
        # modifiers given twice
        ("v=spf1 redirect=a.test redirect=b.test", "redirect=b.test"),
        ("v=spf1 exp=a.test -all EXP=b.test", "EXP=b.test"),
        # macros (RFC 7208 §7.1)
        ("v=spf1 exists:%{x}.example.com", "exists:%{x}.example.com"),
        ("v=spf1 exists:%{i0}.example.com", "exists:%{i0}.example.com"),
        ("v=spf1 exists:%{i}.%{d", "exists:%{i}.%{d"),
        ("v=spf1 exists:%d.example.com", "exists:%d.example.com"),
        ("v=spf1 include:100%.example.com", "include:100%.example.com"),
        ("v=spf1 exists:%{ix}.example.com", "exists:%{ix}.example.com"),
        ("v=spf1 exists:%{t}.%{d}", "exists:%{t}.%{d}"),  # c, r, t: explanation text only
        ("v=spf1 x-note=%{q}", "x-note=%{q}"),
    ],
)
def test_invalid_records_name_the_offending_term(text: str, term: str) -> None:
    with pytest.raises(SpfSyntaxError) as raised:
        parse_spf(text)
    assert raised.value.term == term
    assert str(raised.value) == f"'{term}' {raised.value.reason}"


def test_a_domain_spec_may_hold_slashes_and_colons_before_the_prefix_lengths() -> None:
    record = parse_spf("v=spf1 a:a/b:c.example.com/24//64 mx:x:y.example.com")
    assert [t.value for t in record.terms] == ["a/b:c.example.com", "x:y.example.com"]


def test_no_record_makes_the_parser_raise_anything_but_a_syntax_error() -> None:
    rng = random.Random(7208)
    for _ in range(20_000):
        with contextlib.suppress(SpfSyntaxError):
            parse_spf(garbled_spf(rng))


def test_syntax_error_reads_well_for_an_admin() -> None:
    with pytest.raises(SpfSyntaxError) as raised:
        parse_spf("v=spf1 ip4:10.0.0.300 -all")
    assert str(raised.value) == "'ip4:10.0.0.300' is not a valid IPv4 network"
    with pytest.raises(SpfSyntaxError) as raised:
        parse_spf("v=spf1 include:a\x07.test")
    assert str(raised.value).startswith("'include:a\\x07.test' ")  # control characters are escaped


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("a", (32, 128)),
        ("-a/24", (24, 128)),
        ("mx//64", (32, 64)),
        ("a:mail.example.com/24//64", (24, 64)),
        ("~mx:x:y/z.example.com/0//0", (0, 0)),
    ],
)
def test_prefix_lengths_of_a_and_mx(text: str, lengths: tuple[int, int]) -> None:
    (parsed,) = parse_spf(f"v=spf1 {text}").terms
    assert parsed.prefix_lengths == lengths


def test_networks_of_ip4_and_ip6_have_host_bits_cleared() -> None:
    record = parse_spf("v=spf1 ip4:192.0.2.77 ip4:192.0.2.77/24 ip6:2001:DB8::1/32 ip6:::1")
    assert [t.network for t in record.terms] == [
        ip_network("192.0.2.77/32"),
        ip_network("192.0.2.0/24"),
        ip_network("2001:db8::/32"),
        ip_network("::1/128"),
    ]
    with pytest.raises(ValueError):
        _ = parse_spf("v=spf1 a").terms[0].network
    with pytest.raises(ValueError):
        _ = parse_spf("v=spf1 ip4:192.0.2.1").terms[0].prefix_lengths


# -- macro expansion (RFC 7208 §7.3), with the examples of §7.4

RFC_VALUES = MacroValues(
    sender="strong-bad@email.example.com",
    domain="email.example.com",
    ip=IPv4Address("192.0.2.3"),
    helo="mx.example.org",
    validated_name="mx.example.org",
    receiver="receiver.example.net",
    timestamp=1_700_000_000,
)


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        # beyond the RFC's table
        ("%{h}.%{p}", "mx.example.org.mx.example.org"),
        ("%{d99999999999999999999}", "email.example.com"),  # more parts than there are: all of them
        ("%{D2R}", "example.email"),  # upper case: URL-escaped (nothing to escape here), R reverses too
        ("%{l2r+-=}", "bad.strong"),
        ("%%%_%-", "% %20"),
    ],
)
def test_macro_expansion(text: str, expanded: str) -> None:
    assert expand_macros(text, RFC_VALUES) == expanded


def test_ipv6_macros() -> None:
    values = replace(RFC_VALUES, ip=IPv6Address("2001:db8::cb01"))
    # §7.4 writes the nibbles in lower case; the OpenSPF suite in upper case. DNS does not care.
    assert expand_macros("%{ir}.%{v}._spf.%{d2}", values).lower() == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    assert expand_macros("%{c} via %{v}", values, explanation=True) == "2001:db8::cb01 via ip6"


def test_upper_case_macros_are_url_escaped() -> None:
    values = replace(RFC_VALUES, sender="~jack&jill=up a_b3.c@e8.example.com")
    assert expand_macros("%{L}", values) == "~jack%26jill%3Dup%20a_b3.c"
    assert expand_macros("%{l}", values, explanation=True) == "~jack&jill=up a_b3.c"


def test_explanation_text_may_hold_spaces_and_c_r_t() -> None:
    text = "%{c} may not send for %{d}, says %{r} at %{t}"
    assert expand_macros(text, RFC_VALUES, explanation=True) == (
        "192.0.2.3 may not send for email.example.com, says receiver.example.net at 1700000000"
    )
    with pytest.raises(SpfSyntaxError):
        expand_macros(text, RFC_VALUES)  # a domain-spec holds no space, nor c, r, t


@pytest.mark.parametrize("text", ["%{x}", "%{d0}", "%{d", "100%", "%(d)", "caf\u00e9", "tab\there", "%{d00}"])
def test_malformed_macro_strings_are_syntax_errors(text: str) -> None:
    with pytest.raises(SpfSyntaxError):
        expand_macros(text, RFC_VALUES, explanation=True)


def test_expanded_domain_specs_lose_the_final_dot_and_are_cut_from_the_left() -> None:
    assert expand_domain_spec("%{d2}.example.net.", RFC_VALUES) == "example.com.example.net"
    sender_domain = "x" * 60 + ".example.com"  # 72 characters
    values = replace(RFC_VALUES, sender=f"a@{sender_domain}")
    # 369 characters: whole labels go from the left (x*60, example, com, x*60) until 253 or fewer remain
    name = expand_domain_spec("%{o}.%{o}.%{o}.%{o}.%{o}.test", values)
    assert name == "example.com." + ".".join([sender_domain] * 3) + ".test"
    assert len(name) == 235


def test_macro_letters() -> None:
    assert macro_letters("%{ir}.%{v}._spf.%{D2}%%") == {"i", "v", "d"}
    assert macro_letters("plain.example.com") == frozenset()


# -- analysis against a real nameserver

HOSTS = """\
host      IN A    192.0.2.1
host6     IN AAAA 2001:db8::1
mail      IN MX   10 host.test.
"""


@dataclass(frozen=True, slots=True)
class Case:
    """A zone `test.` (HOSTS plus `zone`), the domain analyzed there and what the analysis must find."""

    id: str
    zone: str
    lookups: int
    codes: tuple[SpfProblemCode, ...] = ()
    void_lookups: int = 0
    includes: tuple[str, ...] = ()
    detail: str = ""  # a part of the first problem's detail
    domain: str = "contoso.test"
    failing: tuple[str, ...] = ()  # names answered SERVFAIL


def spf(name: str, record: str) -> str:
    return f'{name} IN TXT "{record}"\n'


NESTED = (
    spf("contoso", "v=spf1 include:a.test include:b.test -all")
    + spf("a", "v=spf1 a:host.test mx:mail.test include:c.test -all")
    + spf("c", "v=spf1 a:host.test a:host6.test a:host.test -all")
)

ANALYSES = [
    Case(
        "eleven lookups through nested includes",
        NESTED + spf("b", "v=spf1 a:host.test mx:mail.test exists:host.test -all"),
        lookups=11,
        codes=(SpfProblemCode.TOO_MANY_LOOKUPS,),
        includes=("a.test", "c.test", "b.test"),
        detail="11 DNS-querying terms",
    ),
    Case(
        "exactly ten lookups",
        NESTED + spf("b", "v=spf1 a:host.test mx:mail.test -all"),
        lookups=10,
        includes=("a.test", "c.test", "b.test"),
    ),
    Case(
        "an include counted each time it is reached, listed once",
        spf("contoso", "v=spf1 include:a.test include:b.test -all")
        + spf("a", "v=spf1 include:c.test -all")
        + spf("b", "v=spf1 include:c.test -all")
        + spf("c", "v=spf1 a:host.test mx:mail.test -all"),
        lookups=8,
        includes=("a.test", "c.test", "b.test"),
    ),
    Case(
        "include loop",
        spf("contoso", "v=spf1 include:a.test -all")
        + spf("a", "v=spf1 include:b.test -all")
        + spf("b", "v=spf1 include:A.test. -all"),
        lookups=3,
        codes=(SpfProblemCode.INCLUDE_LOOP,),
        includes=("a.test", "b.test"),
        detail="contoso.test -> a.test -> b.test -> a.test",
    ),
    Case(
        "a domain that includes itself",
        spf("contoso", "v=spf1 include:contoso.test -all"),
        lookups=1,
        codes=(SpfProblemCode.INCLUDE_LOOP,),
        detail="contoso.test -> contoso.test",
    ),
    Case(
        "include of a name without SPF",
        spf("contoso", "v=spf1 include:nospf.test -all") + spf("nospf", "site-verification=abc"),
        lookups=1,
        codes=(SpfProblemCode.INCLUDE_WITHOUT_SPF,),
        includes=("nospf.test",),
        detail="nospf.test publishes no SPF record",
    ),
    Case(
        "include of a name without TXT records",
        spf("contoso", "v=spf1 include:host.test -all"),
        lookups=1,
        void_lookups=1,
        codes=(SpfProblemCode.INCLUDE_WITHOUT_SPF,),
        includes=("host.test",),
    ),
    Case(
        "include of NXDOMAIN",
        spf("contoso", "v=spf1 include:gone.test -all"),
        lookups=1,
        void_lookups=1,
        codes=(SpfProblemCode.INCLUDE_WITHOUT_SPF,),
        includes=("gone.test",),
        detail="gone.test does not exist",
    ),
    Case(
        "include of a name with two SPF records",
        spf("contoso", "v=spf1 include:twice.test -all")
        + spf("twice", "v=spf1 a:host.test -all")
        + spf("twice", "v=spf1 mx:mail.test -all"),
        lookups=1,
        codes=(SpfProblemCode.INCLUDE_MULTIPLE,),
        includes=("twice.test",),
        detail="twice.test publishes 2 SPF records",
    ),
    Case(
        "include of a record that does not parse",
        spf("contoso", "v=spf1 include:broken.test -all") + spf("broken", "v=spf1 ip4:192.0.2.300 -all"),
        lookups=1,
        codes=(SpfProblemCode.INCLUDE_SYNTAX,),
        includes=("broken.test",),
        detail="'ip4:192.0.2.300' is not a valid IPv4 network",
    ),
    Case(
        "three void lookups",
        spf("contoso", "v=spf1 a:gone.test mx:host.test exists:host6.test -all"),
        lookups=3,
        void_lookups=3,
        codes=(SpfProblemCode.TOO_MANY_VOID_LOOKUPS,),
        detail="3 lookups found nothing",
    ),
    Case(
        "two void lookups are allowed",
        spf("contoso", "v=spf1 a:gone.test mx:host.test a:host6.test -all"),
        lookups=3,
        void_lookups=2,
    ),
    Case(
        "a and mx without a domain use the current one",
        spf("contoso", "v=spf1 a mx -all") + "contoso IN AAAA 2001:db8::25\ncontoso IN MX 10 host.test.\n",
        lookups=2,
    ),
    Case(
        "redirect counted and followed",
        spf("contoso", "v=spf1 a:host.test redirect=r.test")
        + spf("r", "v=spf1 mx:mail.test include:c.test")
        # redirect to a record that has all: counted, and its own redirect is ignored
        + spf("c", "v=spf1 a:host.test -all redirect=gone.test"),
        lookups=5,
        includes=("r.test", "c.test"),
    ),
    Case(
        "redirect ignored when the record has all",
        spf("contoso", "v=spf1 a:host.test redirect=gone.test ~all"),
        lookups=1,
    ),
    Case(
        "redirect to NXDOMAIN",
        spf("contoso", "v=spf1 redirect=gone.test"),
        lookups=1,
        void_lookups=1,
        codes=(SpfProblemCode.INCLUDE_WITHOUT_SPF,),
        includes=("gone.test",),
        detail="redirect=gone.test: gone.test does not exist",
    ),
    Case(
        "mx with 11 hosts",
        spf("contoso", "v=spf1 mx:bigmx.test -all")
        + "".join(f"bigmx IN MX {n} h{n}.test.\n" for n in range(11)),
        lookups=1,
        codes=(SpfProblemCode.MX_TOO_MANY_HOSTS,),
        detail="bigmx.test has 11 MX hosts",
    ),
    Case(
        "mx with 10 hosts",
        spf("contoso", "v=spf1 mx:bigmx.test -all")
        + "".join(f"bigmx IN MX {n} h{n}.test.\n" for n in range(10)),
        lookups=1,
    ),
    Case(
        "ptr warned about, counted, not asked",
        spf("contoso", "v=spf1 include:a.test -all") + spf("a", "v=spf1 ptr:host.test -all"),
        lookups=2,
        codes=(SpfProblemCode.PTR_USED,),
        includes=("a.test",),
    ),
    Case(
        "macro terms counted, not followed",
        spf("contoso", "v=spf1 exists:%{i}._spf.contoso.test include:%{d1}.gone.test a:%{d} -all"),
        lookups=3,
    ),
    Case(
        "a failing nameserver answer is reported and the walk goes on",
        spf("contoso", "v=spf1 include:broken.test a:gone.test -all"),
        lookups=2,
        void_lookups=1,
        codes=(SpfProblemCode.DNS_UNAVAILABLE,),
        includes=("broken.test",),
        detail="include:broken.test: TXT broken.test",
        failing=("broken.test",),
    ),
    Case(
        "the walk stops descending at depth 20 and says so",
        spf("contoso", "v=spf1 include:d1.test -all")
        + "".join(spf(f"d{n}", f"v=spf1 include:d{n + 1}.test -all") for n in range(1, 25)),
        lookups=21,
        codes=(SpfProblemCode.TOO_MANY_LOOKUPS,),
        includes=tuple(f"d{n}.test" for n in range(1, 21)),
        detail="stopped descending at depth 20",
    ),
    Case(
        "the walk stops asking after 100 queries and says so",
        spf("contoso", "v=spf1" + " include:wide.test" * 12 + " -all")
        + spf("wide", "v=spf1" + " a:host.test" * 9 + " -all"),
        lookups=12 + 10 * 9,  # the 11th and 12th include are counted but not followed
        codes=(SpfProblemCode.TOO_MANY_LOOKUPS,),
        includes=("wide.test",),
        detail="stopped asking after 100 DNS queries",
    ),
]


async def analyze(server: DnsTestServer, domain: str) -> SpfAnalysis:
    """The analysis of the one SPF record `domain` publishes on `server`."""
    resolver = DnsResolver(server.settings())
    [record] = [txt.text for txt in await resolver.txt(domain) if is_spf_record(txt.text)]
    return await analyze_spf(resolver, domain, parse_spf(record))


@pytest.mark.parametrize("case", ANALYSES, ids=[case.id for case in ANALYSES])
async def test_analysis(case: Case) -> None:
    with DnsTestServer({"test": HOSTS + case.zone}) as server:
        for name in case.failing:
            server.set_failure(name)
        analysis = await analyze(server, case.domain)
    assert (analysis.lookups, analysis.void_lookups) == (case.lookups, case.void_lookups)
    assert len(analysis.lookup_terms) == analysis.lookups
    assert tuple(problem.code for problem in analysis.problems) == case.codes
    assert analysis.includes == case.includes
    assert case.detail in (analysis.problems[0].detail if analysis.problems else "")


async def test_lookup_terms_show_where_the_count_comes_from() -> None:
    zone = HOSTS + NESTED + spf("b", "v=spf1 a:host.test mx:mail.test exists:host.test -all")
    with DnsTestServer({"test": zone}) as server:
        analysis = await analyze(server, "Contoso.TEST.")
    assert analysis.domain == "contoso.test"
    assert analysis.lookup_terms == (
        "contoso.test: include:a.test",
        "a.test: a:host.test",
        "a.test: mx:mail.test",
        "a.test: include:c.test",
        "c.test: a:host.test",
        "c.test: a:host6.test",
        "c.test: a:host.test",
        "contoso.test: include:b.test",
        "b.test: a:host.test",
        "b.test: mx:mail.test",
        "b.test: exists:host.test",
    )
    [problem] = analysis.problems
    assert problem.domain == "contoso.test"
    assert "'b.test: exists:host.test'" in problem.detail  # the term at which receivers give up


@pytest.mark.parametrize(
    ("included", "code"),
    [
        ("v=spf1 include:a.test", SpfProblemCode.INCLUDE_LOOP),
        ("v=spf1 ptr", SpfProblemCode.PTR_USED),
        ("v=spf1 include:gone.test", SpfProblemCode.INCLUDE_WITHOUT_SPF),
        ("v=spf1 mx:bigmx.test", SpfProblemCode.MX_TOO_MANY_HOSTS),
    ],
)
async def test_problems_name_the_domain_whose_record_holds_the_term(
    included: str, code: SpfProblemCode
) -> None:
    zone = (
        HOSTS
        + spf("contoso", "v=spf1 include:a.test -all")
        + spf("a", included)
        + "".join(f"bigmx IN MX {n} h{n}.test.\n" for n in range(11))
    )
    with DnsTestServer({"test": zone}) as server:
        analysis = await analyze(server, "contoso.test")
    assert [(problem.code, problem.domain) for problem in analysis.problems] == [(code, "a.test")]


async def test_macro_terms_are_not_followed() -> None:
    zone = HOSTS + spf("contoso", "v=spf1 exists:%{i}._spf.contoso.test include:%{d1}.other.test -all")
    with DnsTestServer({"test": zone}) as server:
        analysis = await analyze(server, "contoso.test")
        asked = [(query.name, query.rdtype) for query in server.queries]
    assert analysis.lookups == 2
    assert asked == [("contoso.test", "TXT")]  # the analysis itself asked nothing


async def test_analysis_sees_what_is_published_now_not_the_cache() -> None:
    zone = HOSTS + spf("contoso", "v=spf1 include:a.test -all") + spf("a", "v=spf1 a:host.test -all")
    with DnsTestServer({"test": zone}) as server:
        resolver = DnsResolver(server.settings())
        record = parse_spf((await resolver.txt("contoso.test"))[0].text)
        assert (await analyze_spf(resolver, "contoso.test", record)).lookups == 2  # a.test is cached
        server.remove_records("a.test", "TXT")
        server.add_txt("a.test", "v=spf1 a:host.test mx:mail.test -all")
        assert (await analyze_spf(resolver, "contoso.test", record)).lookups == 3


async def test_a_silent_nameserver_gives_dns_unavailable_and_never_raises() -> None:
    record = parse_spf("v=spf1 include:a.test ip4:192.0.2.0/24 -all")
    with silent_nameserver() as address:
        resolver = DnsResolver(DnsSettings(nameservers=(address,), timeout=0.2))
        started = time.monotonic()
        analysis = await analyze_spf(resolver, "contoso.test", record)
    assert time.monotonic() - started < 1.0
    assert [problem.code for problem in analysis.problems] == [SpfProblemCode.DNS_UNAVAILABLE]
    assert analysis.problems[0].domain == "contoso.test"
    assert (analysis.lookups, analysis.void_lookups) == (1, 0)
    assert analysis.includes == ("a.test",)
