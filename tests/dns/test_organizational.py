"""Organizational domains from the Public Suffix List."""

from __future__ import annotations

import pytest

from postroom.dns.organizational import organizational_domain, same_organization


@pytest.mark.parametrize(
    ("name", "organizational"),
    [
        ("contoso.com", "contoso.com"),
        ("a.b.contoso.com.", "contoso.com"),
        ("Mail.Contoso.CO.UK", "contoso.co.uk"),
        ("reports.contoso.co.uk", "contoso.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own
        ("tenant.github.io", "tenant.github.io"),  # the private section counts, as for receivers
        ("x.contoso.example", "contoso.example"),  # no listed suffix: the default rule *
        ("[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_organizational_domain(name: str, organizational: str) -> None:
    assert organizational_domain(name) == organizational


def test_siblings_share_an_organization_and_neighbours_under_a_suffix_do_not() -> None:
    assert same_organization("mail.contoso.co.uk", "reports.contoso.co.uk")
    assert not same_organization("contoso.co.uk", "fabrikam.co.uk")
    assert not same_organization("a.github.io", "github.io")
