"""The records a domain and the service must publish: values, names, TTLs and zone text."""

from __future__ import annotations

import dataclasses

import dns.zone
import pytest

from postroom.config.settings import ServiceSettings
from postroom.dns import (
    DkimSelector,
    DnsRecord,
    DomainFacts,
    NotADomainName,
    dkim_record,
    domain_records,
    mta_sts_policy,
    service_records,
)
from postroom.dns.mta_sts import parse_sts_policy, policy_id
from postroom.dns.records import txt_strings

SERVICE = ServiceSettings(domain="postroom.test", hostname="mx.postroom.test")
KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "A" * 340 + "IDAQAB"
FACTS = DomainFacts(
    name="contoso.example",
    domain_key="contoso-example",
    verification_record=None,
    dkim=(DkimSelector("postroom1", KEY, True), DkimSelector("postroom2", KEY[::-1], False)),
)


def by_name(records: list[DnsRecord]) -> dict[tuple[str, str], DnsRecord]:
    return {(r.type, r.name): r for r in records}


def test_a_verified_domain_gets_every_record_with_the_values_of_spec_1() -> None:
    records = by_name(domain_records(SERVICE, FACTS))
    mx = records["MX", "contoso.example"]
    assert (mx.value, mx.priority, mx.ttl) == ("contoso-example.mail.protection.postroom.test", 0, 3600)
    assert records["TXT", "contoso.example"].value == "v=spf1 include:spf.protection.postroom.test -all"
    assert records["TXT", "postroom1._domainkey.contoso.example"].value == f"v=DKIM1; k=rsa; p={KEY}"
    assert "signs" in records["TXT", "postroom1._domainkey.contoso.example"].purpose
    assert "rotation" in records["TXT", "postroom2._domainkey.contoso.example"].purpose
    dmarc = records["TXT", "_dmarc.contoso.example"]
    assert dmarc.value == "v=DMARC1; p=none; rua=mailto:postmaster@contoso.example"
    assert "p=quarantine" in dmarc.purpose and "p=reject" in dmarc.purpose
    for label in ("autodiscover", "autoconfig", "mta-sts"):
        assert records["CNAME", f"{label}.contoso.example"].value == "mx.postroom.test"
    policy = mta_sts_policy(SERVICE, FACTS)
    assert records["TXT", "_mta-sts.contoso.example"].value == f"v=STSv1; id={policy_id(policy)}"
    assert records["TXT", "_smtp._tls.contoso.example"].value == (
        "v=TLSRPTv1; rua=mailto:postmaster@contoso.example"
    )
    assert all(r.ttl == 3600 for r in records.values())
    assert ("TXT", "contoso.example") in records and len(
        [r for r in records if r == ("TXT", "contoso.example")]
    ) == 1


def test_a_dkim_selector_publishes_its_key_at_selector_domainkey() -> None:
    record = dkim_record("contoso.example", FACTS.dkim[0])
    assert record.name == "postroom1._domainkey.contoso.example"
    assert record.value == f"v=DKIM1; k=rsa; p={KEY}"


def test_a_pending_domain_also_gets_its_ownership_proof_first() -> None:
    pending = dataclasses.replace(FACTS, verification_record="postroom-verification=abc")
    first = domain_records(SERVICE, pending)[0]
    assert (first.type, first.name, first.value) == ("TXT", "contoso.example", "postroom-verification=abc")


def test_the_organization_s_senders_merge_into_the_one_spf_record() -> None:
    facts = dataclasses.replace(
        FACTS, spf_senders=("131.107.21.231", "2001:db8::/48"), spf_includes=("mail.vendor.example",)
    )
    spf = by_name(domain_records(SERVICE, facts))["TXT", "contoso.example"]
    assert spf.value == (
        "v=spf1 ip4:131.107.21.231 ip6:2001:db8::/48 include:mail.vendor.example "
        "include:spf.protection.postroom.test -all"
    )


def test_configured_names_replace_the_defaults() -> None:
    service = dataclasses.replace(SERVICE, mx_suffix="mx.mailhost.example", spf_host="_spf.mailhost.example")
    records = by_name(domain_records(service, FACTS))
    assert records["MX", "contoso.example"].value == "contoso-example.mx.mailhost.example"
    assert records["TXT", "contoso.example"].value == "v=spf1 include:_spf.mailhost.example -all"


@pytest.mark.parametrize("mode", ["testing", "enforce"])
def test_the_mta_sts_policy_names_the_domain_s_mx_and_the_configured_mode(mode: str) -> None:
    policy = parse_sts_policy(mta_sts_policy(dataclasses.replace(SERVICE, mta_sts_mode=mode), FACTS))
    assert policy.mode == mode
    assert policy.mx == ("contoso-example.mail.protection.postroom.test",)
    assert policy.max_age == 604800


def test_zone_lines_are_bind_text_that_parses_back_to_the_same_values() -> None:
    records = domain_records(SERVICE, FACTS)
    text = "\n".join(r.zone_line() for r in records)
    parsed = dns.zone.from_text(
        "@ 3600 IN SOA ns. h. 1 1 1 1 1\n@ 3600 IN NS ns.\n" + text, origin="contoso.example."
    )
    dkim = parsed.find_rdataset("postroom1._domainkey", "TXT")
    [rdata] = list(dkim)
    assert b"".join(rdata.strings).decode() == f"v=DKIM1; k=rsa; p={KEY}"  # type: ignore[attr-defined]
    assert all(len(s) <= 255 for s in rdata.strings)  # type: ignore[attr-defined]
    [mx] = list(parsed.find_rdataset("@", "MX"))
    assert mx.to_text() == "0 contoso-example.mail.protection.postroom.test."


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("", [0]), ("a" * 255, [255]), ("a" * 256, [255, 1]), ("é" * 200, [254, 146])],
)
def test_txt_values_split_at_255_octets_never_inside_a_character(text: str, sizes: list[int]) -> None:
    chunks = txt_strings(text)
    assert [len(c.encode()) for c in chunks] == sizes
    assert "".join(chunks) == text


def test_json_form_has_type_name_value_ttl_and_the_mx_priority() -> None:
    [mx] = [r for r in domain_records(SERVICE, FACTS) if r.type == "MX"]
    assert mx.as_json() == {
        "type": "MX",
        "name": "contoso.example",
        "value": "contoso-example.mail.protection.postroom.test",
        "ttl": 3600,
        "priority": 0,
        "purpose": mx.purpose,
    }


def test_service_records_publish_the_hosts_the_spf_host_and_ptr_advice() -> None:
    service = dataclasses.replace(SERVICE, addresses=("203.0.113.25", "2001:db8::25"))
    default = DomainFacts("contoso.postroom.test", "contoso-postroom-test", None)
    records = service_records(service, [default])
    assert ("A", "mx.postroom.test", "203.0.113.25") in [(r.type, r.name, r.value) for r in records]
    assert ("AAAA", "*.mail.protection.postroom.test", "2001:db8::25") in [
        (r.type, r.name, r.value) for r in records
    ]
    spf = by_name(records)["TXT", "spf.protection.postroom.test"]
    assert spf.value == "v=spf1 ip4:203.0.113.25 ip6:2001:db8::25 -all"
    ptr = by_name(records)["PTR", "25.113.0.203.in-addr.arpa"]
    assert ptr.value == "mx.postroom.test"
    assert by_name(records)["MX", "contoso.postroom.test"].value == (
        "contoso-postroom-test.mail.protection.postroom.test"
    )


def test_service_records_without_addresses_give_only_the_default_domains() -> None:
    default = DomainFacts("contoso.postroom.test", "contoso-postroom-test", None)
    assert {r.type for r in service_records(SERVICE, [default])} == {"MX", "TXT"}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("192.0.2.1", "is an IP address"),
        ("[192.0.2.1]", "is an IP address"),
        ("[IPv6:2001:db8::1]", "is an IP address"),
        ("localhost", "is not a domain name"),
        ("bad_label.example", "is not a domain name"),
        ("a.123", "is not a domain name"),
    ],
)
def test_a_name_that_is_no_domain_has_no_records(name: str, why: str) -> None:
    facts = dataclasses.replace(FACTS, name=name, domain_key=name.replace(".", "-"))
    for make in (domain_records, mta_sts_policy):
        with pytest.raises(NotADomainName, match=why):
            make(SERVICE, facts)


def test_a_default_domain_has_the_records_the_service_zone_publishes_for_it() -> None:
    default = DomainFacts(
        "contoso.postroom.test",
        "contoso-postroom-test",
        None,
        dkim=FACTS.dkim,
        is_default=True,
    )
    records = domain_records(SERVICE, default)
    assert [(r.type, r.name) for r in records] == [
        ("MX", "contoso.postroom.test"),
        ("TXT", "contoso.postroom.test"),
    ]
    assert records == service_records(SERVICE, [default])
