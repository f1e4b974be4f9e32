"""DMARC record parsing: what receivers accept, and the tag each refusal names."""

from __future__ import annotations

import pytest

from postroom.dns.dmarc import DmarcSyntaxError, is_dmarc_record, parse_dmarc


def test_a_full_record_parses_into_its_tags() -> None:
    record = parse_dmarc(
        "v=DMARC1; p=Quarantine; sp=reject; adkim=s; aspf=r; pct=50; "
        "rua=mailto:dmarc@contoso.example,mailto:agg@vendor.example; ruf=mailto:f@contoso.example;"
    )
    assert record.policy == "quarantine"
    assert record.subdomain_policy == "reject"
    assert (record.dkim_alignment, record.spf_alignment, record.percent) == ("s", "r", 50)
    assert record.aggregate_reports == ("mailto:dmarc@contoso.example", "mailto:agg@vendor.example")
    assert record.failure_reports == ("mailto:f@contoso.example",)


def test_defaults_and_unknown_tags() -> None:
    record = parse_dmarc("v=DMARC1;p=none;future=1")
    assert (record.dkim_alignment, record.spf_alignment, record.percent) == ("r", "r", 100)
    assert record.subdomain_policy is None and record.aggregate_reports == ()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("v=DMARC1; p=block", "p=block"),
        ("v=DMARC1; rua=mailto:a@contoso.example", "no p= tag"),
        ("p=none; v=DMARC1", "must begin with v=DMARC1"),
        ("v=DMARC2; p=none", "must begin with v=DMARC1"),
        ("v=DMARC1; p=none; p=reject", "p= appears twice"),
        ("v=DMARC1; p=none; sp=drop", "sp=drop"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; pct=150", "pct=150"),
        ("v=DMARC1; p=none; rua=dmarc@contoso.example", "not a mailto: URI"),
        ("v=DMARC1; p=none; rua=mailto:", "not a mailto: URI"),
        ("v=DMARC1; p=none; garbage", "not a tag=value pair"),
    ],
)
def test_broken_records_name_the_tag_at_fault(text: str, names: str) -> None:
    with pytest.raises(DmarcSyntaxError, match=names):
        parse_dmarc(text)


@pytest.mark.parametrize(
    ("text", "is_dmarc"),
    [("v=DMARC1; p=none", True), (" v = DMARC1 ;p=none", True), ("v=spf1 -all", False), ("v=DMARC10", False)],
)
def test_which_txt_records_are_dmarc_records(text: str, is_dmarc: bool) -> None:
    assert is_dmarc_record(text) is is_dmarc
