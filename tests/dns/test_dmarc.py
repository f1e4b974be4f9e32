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
        ("v=DMARC1; p=block", "p=block is not none, quarantine or reject, and without a usable rua="),
        ("v=DMARC1; pct=50", "there is no p= tag"),
        ("v=DMARC1; rua=https://reports.example/", "no p= tag, and without a usable rua="),
        ("p=none; v=DMARC1", "must begin with v=DMARC1"),
        ("v=DMARC2; p=none", "must begin with v=DMARC1"),
        ("v=DMARC1; p=none; p=reject", "p= appears twice"),
        ("v=DMARC1; p=none; sp=drop", "sp=drop"),
    ],
)
def test_records_receivers_ignore_name_the_tag_at_fault(text: str, names: str) -> None:
    with pytest.raises(DmarcSyntaxError, match=names):
        parse_dmarc(text)


RUA = "rua=mailto:d@contoso.example"


@pytest.mark.parametrize(
    ("text", "read", "warning"),
    [
        (
            f"v=DMARC1; {RUA}",
            {"policy": "none"},
            "there is no p= tag: with rua= given, receivers act as if p=none",
        ),
        (f"v=DMARC1; p=block; {RUA}", {"policy": "none"}, "p=block is not none"),
        (f"v=DMARC1; p=reject; sp=drop; {RUA}", {"policy": "none", "subdomain_policy": None}, "sp=drop"),
        (
            "v=DMARC1; p=reject; pct=150",
            {"policy": "reject", "percent": 100},
            "pct=150 is not a whole number",
        ),
        ("v=DMARC1; p=none; pct=+5", {"percent": 100}, "pct=+5"),
        ("v=DMARC1; p=none; adkim=x; aspf=strict", {"dkim_alignment": "r", "spf_alignment": "r"}, "adkim=x"),
        ("v=DMARC1; p=none; rua=dmarc@contoso.example", {"aggregate_reports": ()}, "is not a mailto: URI"),
        ("v=DMARC1; p=none; ruf=https://r.example/", {"failure_reports": ()}, "is not a mailto: URI"),
        ("v=DMARC1; p=none; rua=mailto:", {"aggregate_reports": ()}, "has no address after mailto:"),
        (
            "v=DMARC1; p=none; rua=mailto:a@contoso.example!10x,mailto:b@contoso.example!10m",
            {"aggregate_reports": ("mailto:b@contoso.example!10m",)},
            "'mailto:a@contoso.example!10x' has a size limit",
        ),
        ("v=DMARC1; p=none; fo=2", {"failure_options": "0"}, "fo=2"),
        ("v=DMARC1; p=none; fo=1:d:s", {"failure_options": "1:d:s"}, None),
        ("v=DMARC1; p=none; rf=iodef", {"report_format": "afrf"}, "rf=iodef"),
        ("v=DMARC1; p=none; ri=daily", {"report_interval": 86400}, "ri=daily"),
        ("v=DMARC1; p=none; ri=3600", {"report_interval": 3600}, None),
        ("v=DMARC1; p=quarantine; garbage", {"policy": "quarantine"}, "'garbage' is not a tag=value pair"),
    ],
)
def test_a_bad_tag_is_discarded_with_a_warning_and_its_default_applies(
    text: str, read: dict[str, object], warning: str | None
) -> None:
    record = parse_dmarc(text)
    for name, value in read.items():
        assert getattr(record, name) == value, name
    if warning is None:
        assert record.warnings == ()
    else:
        assert any(warning in w for w in record.warnings), record.warnings


@pytest.mark.parametrize(
    ("text", "is_dmarc"),
    [("v=DMARC1; p=none", True), (" v = DMARC1 ;p=none", True), ("v=spf1 -all", False), ("v=DMARC10", False)],
)
def test_which_txt_records_are_dmarc_records(text: str, is_dmarc: bool) -> None:
    assert is_dmarc_record(text) is is_dmarc
