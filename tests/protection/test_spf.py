"""SPF check_host() against the real resolver and the loopback DNS server: results, the limits of RFC 7208
§4.6.4, the HELO identity, IPv6, macros, explanations, DNS failures and the cache.

One server (the root zone: a name not given below is NXDOMAIN) serves `ZONE` for the whole module; each
test builds a fresh resolver on it, so what it counts in the server's query log is its own doing.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest

from postroom.dns.resolver import DnsResolver
from postroom.model.verdicts import SpfResult, SpfVerdict
from postroom.protection.spf import MAX_EXPLANATION_LENGTH, check_host, check_spf
from tests.support.dns_server import DnsTestServer

# name -> records: a str is a TXT record, a (type, value) pair anything else.
ZONE: dict[str, list[str | tuple[str, str]]] = {
    # results by qualifier
    "pass.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
    "fail.test": ["v=spf1 -ip4:192.0.2.1 ~all", "unrelated text"],
    "neutral.test": ["v=spf1 ip4:198.51.100.1"],
    "none.test": ["no SPF here"],
    "two.test": ["v=spf1 -all", "v=spf1 +all"],
    "broken.test": ["v=spf1 ip4:192.0.2.300 -all"],
    "typed.test": [("SPF", '"v=spf1 +all"')],  # the obsolete SPF type only: never asked for
    # include and redirect
    "outer.test": ["v=spf1 include:inner.test -all"],
    "inner.test": ["v=spf1 ip4:192.0.2.10 -all"],
    "include-none.test": ["v=spf1 include:none.test -all"],
    "redirecting.test": ["v=spf1 redirect=pass.test"],
    "redirect-none.test": ["v=spf1 redirect=missing.test"],
    # the limits: ten DNS-querying terms, two void lookups, ten MX names, ten PTR names
    "ten.test": ["v=spf1 " + " ".join(["a:host.ten.test"] * 10) + " ip4:192.0.2.1 -all"],
    "eleven.test": ["v=spf1 " + " ".join(["a:host.ten.test"] * 10) + " a:eleventh.ten.test -all"],
    "host.ten.test": [("A", "203.0.113.1")],
    "eleventh.ten.test": [("A", "192.0.2.1")],
    "deep.test": ["v=spf1 include:inner2.deep.test " + " ".join(["a:host.ten.test"] * 8) + " -all"],
    "inner2.deep.test": ["v=spf1 a:host.ten.test ?all"],
    "void2.test": ["v=spf1 a:nx1.void.test mx:nx2.void.test ?all"],
    "void3.test": ["v=spf1 a:nx1.void.test mx:nx2.void.test exists:nx3.void.test ?all"],
    "mx10.test": ["v=spf1 mx -all", *[("MX", f"{i} mx{i}.mx10.test.") for i in range(10)]],
    **{f"mx{i}.mx10.test": [("A", f"203.0.113.{i + 1}")] for i in range(10)},
    "mx.mx10.test": [],
    "mx11.test": ["v=spf1 mx -all", *[("MX", f"{i} mx{i}.mx10.test.") for i in range(11)]],
    "ptr.test": ["v=spf1 ptr -all"],
    "2.100.51.198.in-addr.arpa": [("PTR", f"h{i}.ptr.test.") for i in range(11)],
    **{f"h{i}.ptr.test": [("A", "198.51.100.2")] for i in range(11)},
    "ptr-elsewhere.test": ["v=spf1 ptr:elsewhere.test -all"],
    # DNS failures (the server answers SERVFAIL for *.servfail.test and nothing for *.silent.test)
    "a-servfail.test": ["v=spf1 a:x.servfail.test -all"],
    "a-silent.test": ["v=spf1 a:x.silent.test -all"],
    "ptr-servfail.test": ["v=spf1 ptr ip4:192.0.2.99 -all"],
    "exp-servfail.test": ["v=spf1 -all exp=x.servfail.test"],
    # IPv6
    "six.test": ["v=spf1 ip6:2001:db8:6::/48 a//64 ip4:192.0.2.0/24 -all", ("AAAA", "2001:db8:7::1")],
    # macros
    "macro.test": ["v=spf1 exists:%{ir}.%{v}.%{l1r-}._spf.%{d} -all"],
    "1.2.0.192.in-addr.alice._spf.macro.test": [("A", "127.0.0.2")],
    IPv6Address("2001:db8::1").reverse_pointer.replace(".arpa", ".alice._spf.macro.test"): [
        ("A", "127.0.0.2")
    ],
    "helo-macro.test": ["v=spf1 a:%{h} -all"],
    "mail.helo-macro.test": [("A", "192.0.2.25")],
    "p-macro.test": ["v=spf1 -all exp=why.p-macro.test"],
    "why.p-macro.test": ["%{p} (%{i}) may not send for %{d}"],
    "25.2.0.192.in-addr.arpa": [("PTR", "mail.helo-macro.test."), ("PTR", "unvalidated.test.")],
    # explanations
    "exp.test": ["v=spf1 -all exp=why.exp.test"],
    "why.exp.test": ["%{s} from %{c} is refused by %{r}: see https://exp.test/spf?ip=%{i}&s=%{S}"],
    "exp-two.test": ["v=spf1 -all exp=two.why.test"],
    "two.why.test": ["one", "two"],
    "exp-long.test": ["v=spf1 -all exp=long.why.test"],
    "long.why.test": ["%{s} " * 40],
    "helo.test": ["v=spf1 -all exp=helo.why.test"],
    "helo.why.test": ["%{s} %{l} %{o} %{d} %{h}"],
    "xn--bcher-kva.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
}


def _servfail(server: DnsTestServer) -> None:
    for name in ("x.servfail.test", "1.0.2.0.192.in-addr.arpa", "99.2.0.192.in-addr.arpa"):
        server.set_failure(name, "SERVFAIL")
    server.set_unanswered("x.silent.test")


@pytest.fixture(scope="module")
def server() -> Iterator[DnsTestServer]:
    with DnsTestServer() as server:
        server.set_zone(".")
        for name, records in ZONE.items():
            for record in records:
                if isinstance(record, str):
                    server.add_txt(name, record)
                elif record[0] == "SPF":
                    server.add_txt(name, record[1].strip('"'), rdtype="SPF")
                else:
                    server.add_records(name, *record)
        _servfail(server)
        yield server


@pytest.fixture
def resolver(server: DnsTestServer) -> DnsResolver:
    return DnsResolver(server.settings(timeout=0.5))


async def spf(resolver: DnsResolver, ip: str, mail_from: str, helo: str = "client.example") -> SpfVerdict:
    return await check_spf(resolver, ip, mail_from, helo, receiver="mx.postroom.test")


# -- results


@pytest.mark.parametrize(
    ("ip", "mail_from", "result", "mechanism"),
    [
        ("192.0.2.7", "user@pass.test", SpfResult.PASS, "ip4:192.0.2.0/24"),
        ("198.51.100.7", "user@pass.test", SpfResult.FAIL, "-all"),
        ("192.0.2.1", "user@fail.test", SpfResult.FAIL, "-ip4:192.0.2.1"),
        ("192.0.2.2", "user@fail.test", SpfResult.SOFTFAIL, "~all"),
        ("192.0.2.2", "user@neutral.test", SpfResult.NEUTRAL, "default"),
        ("192.0.2.10", "user@outer.test", SpfResult.PASS, "include:inner.test"),
        ("192.0.2.11", "user@outer.test", SpfResult.FAIL, "-all"),
        ("192.0.2.7", "user@redirecting.test", SpfResult.PASS, "ip4:192.0.2.0/24"),
        ("192.0.2.7", "user@none.test", SpfResult.NONE, ""),
        ("192.0.2.7", "user@missing.test", SpfResult.NONE, ""),
        ("192.0.2.7", "user@two.test", SpfResult.PERMERROR, ""),
        ("192.0.2.7", "user@broken.test", SpfResult.PERMERROR, "ip4:192.0.2.300"),
        ("192.0.2.7", "user@include-none.test", SpfResult.PERMERROR, "include:none.test"),
        ("192.0.2.7", "user@redirect-none.test", SpfResult.PERMERROR, "redirect=missing.test"),
        ("192.0.2.7", "user@localhost", SpfResult.NONE, ""),  # not a multi-label domain name
        ("192.0.2.7", "user@[192.0.2.7]", SpfResult.NONE, ""),
        ("192.0.2.7", "user@a..pass.test", SpfResult.NONE, ""),
    ],
)
async def test_results(
    resolver: DnsResolver, ip: str, mail_from: str, result: SpfResult, mechanism: str
) -> None:
    verdict = await spf(resolver, ip, mail_from)
    assert (verdict.result, verdict.mechanism) == (result, mechanism), verdict
    assert (verdict.identity, verdict.domain, verdict.client_ip) == (
        "mailfrom",
        mail_from.rpartition("@")[2],
        ip,
    )


async def test_an_internationalized_domain_is_checked_by_its_a_labels(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.7", "user@B\u00fccher.test")  # published at xn--bcher-kva.test
    assert (verdict.result, verdict.domain) == (SpfResult.PASS, "B\u00fccher.test")


async def test_only_txt_records_are_asked_for(server: DnsTestServer, resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.7", "user@typed.test")
    assert verdict.result is SpfResult.NONE
    assert server.count("typed.test", "TXT") == 1
    assert server.count("typed.test", "SPF") == 0


async def test_a_client_address_that_is_not_an_address_is_a_programming_error(resolver: DnsResolver) -> None:
    with pytest.raises(ValueError):
        await spf(resolver, "not-an-ip", "user@pass.test")


# -- the null sender: the HELO identity


async def test_the_null_sender_checks_postmaster_at_the_helo_domain(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.7", "", helo="helo.test")
    assert (verdict.result, verdict.identity, verdict.domain) == (SpfResult.FAIL, "helo", "helo.test")
    assert verdict.explanation == "postmaster@helo.test postmaster helo.test helo.test helo.test"


async def test_a_sender_without_local_part_is_postmaster(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.7", "@helo.test", helo="other.example")
    assert verdict.explanation == "postmaster@helo.test postmaster helo.test helo.test other.example"


@pytest.mark.parametrize("helo", ["[192.0.2.7]", "localhost", "", "bad..name.test"])
async def test_a_helo_that_is_no_domain_name_gives_none(resolver: DnsResolver, helo: str) -> None:
    verdict = await spf(resolver, "192.0.2.7", "", helo=helo)
    assert (verdict.result, verdict.identity) == (SpfResult.NONE, "helo")


async def test_mail_from_is_checked_not_the_helo_when_there_is_a_sender(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.7", "user@pass.test", helo="helo.test")
    assert (verdict.result, verdict.identity, verdict.domain) == (SpfResult.PASS, "mailfrom", "pass.test")


async def test_check_host_takes_the_domain_the_caller_chose(resolver: DnsResolver) -> None:
    verdict = await check_host(
        resolver, "192.0.2.7", "pass.test", "user@elsewhere.example", helo="h.example", receiver="mx.test"
    )
    assert (verdict.result, verdict.domain, verdict.identity) == (SpfResult.PASS, "pass.test", "mailfrom")


# -- limits (RFC 7208 §4.6.4)


async def test_ten_dns_querying_terms_are_allowed(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "user@ten.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.PASS, "ip4:192.0.2.1")


async def test_the_eleventh_dns_querying_term_is_a_permerror(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "user@eleven.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.PERMERROR, "a:eleventh.ten.test")
    assert "more than 10 DNS-querying terms" in verdict.explanation


async def test_terms_of_included_records_count_too(resolver: DnsResolver) -> None:
    # include (1) + its a (2) + eight a (10): allowed; the record then ends in -all
    verdict = await spf(resolver, "192.0.2.1", "user@deep.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.FAIL, "-all")


async def test_two_void_lookups_are_allowed_a_third_is_a_permerror(resolver: DnsResolver) -> None:
    allowed = await spf(resolver, "192.0.2.1", "user@void2.test")
    assert (allowed.result, allowed.mechanism) == (SpfResult.NEUTRAL, "?all")
    over = await spf(resolver, "192.0.2.1", "user@void3.test")
    assert (over.result, over.mechanism) == (SpfResult.PERMERROR, "exists:nx3.void.test")


async def test_mx_with_ten_names_is_evaluated_with_eleven_a_permerror(resolver: DnsResolver) -> None:
    ten = await spf(resolver, "203.0.113.10", "user@mx10.test")
    assert (ten.result, ten.mechanism) == (SpfResult.PASS, "mx")
    eleven = await spf(resolver, "203.0.113.10", "user@mx11.test")
    assert (eleven.result, eleven.mechanism) == (SpfResult.PERMERROR, "mx")


async def test_ptr_looks_at_ten_names_at_most(server: DnsTestServer, resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "198.51.100.2", "user@ptr-elsewhere.test")  # 11 names, none under it
    assert (verdict.result, verdict.mechanism) == (SpfResult.FAIL, "-all")
    assert sum(server.count(f"h{i}.ptr.test", "A") for i in range(11)) == 10


async def test_ptr_matches_a_validated_name_under_the_domain(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "198.51.100.2", "user@ptr.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.PASS, "ptr")


# -- DNS failures


async def test_a_dns_failure_is_a_temperror_naming_the_term(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "user@a-servfail.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.TEMPERROR, "a:x.servfail.test")


async def test_a_dns_timeout_is_a_temperror(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "user@a-silent.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.TEMPERROR, "a:x.silent.test")
    assert "no answer" in verdict.explanation


async def test_a_failing_record_lookup_is_a_temperror(server: DnsTestServer, resolver: DnsResolver) -> None:
    server.set_failure("pass.test", "SERVFAIL")
    try:
        verdict = await spf(resolver, "192.0.2.1", "user@pass.test")
    finally:
        server.set_failure("pass.test", None)
    assert verdict.result is SpfResult.TEMPERROR


async def test_a_failing_ptr_lookup_only_makes_ptr_not_match(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.99", "user@ptr-servfail.test")
    assert (verdict.result, verdict.mechanism) == (SpfResult.PASS, "ip4:192.0.2.99")


async def test_a_failing_exp_lookup_gives_the_default_explanation(resolver: DnsResolver) -> None:
    verdict = await check_spf(
        resolver,
        "192.0.2.1",
        "user@exp-servfail.test",
        "h.test",
        receiver="mx.test",
        default_explanation="%{d}",
    )
    assert (verdict.result, verdict.explanation) == (SpfResult.FAIL, "exp-servfail.test")


# -- IPv6


@pytest.mark.parametrize(
    ("ip", "result", "mechanism"),
    [
        ("2001:db8:6:ffff::1", SpfResult.PASS, "ip6:2001:db8:6::/48"),
        ("2001:db8:7::abcd", SpfResult.PASS, "a//64"),
        ("2001:db8:7:1::1", SpfResult.FAIL, "-all"),
        ("192.0.2.4", SpfResult.PASS, "ip4:192.0.2.0/24"),
        ("::ffff:192.0.2.4", SpfResult.PASS, "ip4:192.0.2.0/24"),  # IPv4-mapped: checked as IPv4
        ("::ffff:198.51.100.4", SpfResult.FAIL, "-all"),
    ],
)
async def test_ipv6_clients(resolver: DnsResolver, ip: str, result: SpfResult, mechanism: str) -> None:
    verdict = await spf(resolver, ip, "user@six.test")
    assert (verdict.result, verdict.mechanism, verdict.client_ip) == (result, mechanism, ip)


# -- macros


@pytest.mark.parametrize("ip", ["192.0.2.1", "2001:db8::1"])
async def test_macros_build_the_names_looked_up(
    server: DnsTestServer, resolver: DnsResolver, ip: str
) -> None:
    assert (await spf(resolver, ip, "alice-smith@macro.test")).result is SpfResult.PASS
    assert (await spf(resolver, ip, "bob@macro.test")).result is SpfResult.FAIL


async def test_the_helo_macro(resolver: DnsResolver) -> None:
    assert (await spf(resolver, "192.0.2.25", "u@helo-macro.test", "mail.helo-macro.test")).result is (
        SpfResult.PASS
    )
    assert (await spf(resolver, "192.0.2.25", "u@helo-macro.test", "other.helo-macro.test")).result is (
        SpfResult.FAIL
    )


async def test_the_p_macro_is_a_validated_name(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.25", "u@p-macro.test")
    assert verdict.explanation == "mail.helo-macro.test (192.0.2.25) may not send for p-macro.test"
    unknown = await spf(resolver, "192.0.2.26", "u@p-macro.test")
    assert unknown.explanation == "unknown (192.0.2.26) may not send for p-macro.test"


# -- explanations


async def test_the_explanation_of_a_fail_is_the_exp_text_expanded(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "j&j@exp.test")
    assert verdict.result is SpfResult.FAIL
    assert verdict.explanation == (
        "j&j@exp.test from 192.0.2.1 is refused by mx.postroom.test: "
        "see https://exp.test/spf?ip=192.0.2.1&s=j%26j%40exp.test"
    )


async def test_without_a_usable_exp_the_default_explanation_is_given(resolver: DnsResolver) -> None:
    fail = await spf(resolver, "198.51.100.9", "user@pass.test")
    assert fail.explanation == "198.51.100.9 is not allowed to send mail from pass.test (SPF)"
    two = await spf(resolver, "192.0.2.1", "user@exp-two.test")  # two TXT records: ignored (§6.2)
    assert two.explanation == "192.0.2.1 is not allowed to send mail from exp-two.test (SPF)"


async def test_an_explanation_is_bounded_and_printable(resolver: DnsResolver) -> None:
    verdict = await spf(resolver, "192.0.2.1", "we\x01ird@exp-long.test")
    assert len(verdict.explanation) == MAX_EXPLANATION_LENGTH
    assert verdict.explanation.startswith("we?ird@exp-long.test we?ird@")
    assert verdict.explanation.isprintable() and verdict.explanation.isascii()


async def test_only_a_fail_has_an_explanation(resolver: DnsResolver) -> None:
    assert (await spf(resolver, "192.0.2.2", "user@fail.test")).explanation == ""  # softfail


# -- the cache


async def test_a_second_check_is_answered_from_the_cache(
    server: DnsTestServer, resolver: DnsResolver
) -> None:
    first = await spf(resolver, "192.0.2.10", "user@outer.test")
    asked = server.count("outer.test") + server.count("inner.test")
    again = await spf(resolver, "192.0.2.10", "user@outer.test")
    assert first == again
    assert server.count("outer.test") + server.count("inner.test") == asked
