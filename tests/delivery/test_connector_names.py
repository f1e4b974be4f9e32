"""The names an outbound connector's TLS domain validation accepts, and how smart host entries read."""

from __future__ import annotations

import pytest

from postroom.delivery.remote import tls_domain_matches
from postroom.model.connectors import split_smart_host


def test_domain_validation_names() -> None:
    cases = [
        ("mail.contoso.com", ["mail.contoso.com"], True),
        ("mail.contoso.com", ["*.contoso.com"], True),  # the certificate's wildcard stands for one label
        ("a.mail.contoso.com", ["*.contoso.com"], False),
        ("*.contoso.com", ["mail.contoso.com"], True),  # the connector's wildcard: any name under it
        ("*.contoso.com", ["a.b.contoso.com"], True),
        ("*.contoso.com", ["*.contoso.com"], True),
        ("*.contoso.com", ["contoso.com"], False),
        ("*.contoso.com", ["mail.contoso.com.evil.test"], False),
        ("mail.contoso.com", ["mail.contoso.com.evil.test", "evil.test"], False),
        ("mail.contoso.com", [], False),
    ]
    for wanted, names, expected in cases:
        assert tls_domain_matches(wanted, names) is expected, (wanted, names)


def test_smart_host_entries() -> None:
    assert split_smart_host("Mail.Contoso.com.") == ("mail.contoso.com", 0)
    assert split_smart_host("mail.contoso.com:2525") == ("mail.contoso.com", 2525)
    assert split_smart_host("192.0.2.1:25") == ("192.0.2.1", 25)
    assert split_smart_host("[2001:db8::1]:2525") == ("2001:db8::1", 2525)
    assert split_smart_host("[2001:db8::1]") == ("2001:db8::1", 0)
    assert split_smart_host("2001:db8::1") == ("2001:db8::1", 0)
    for bad in ("", ":25", "host:0", "host:99999", "host:x", "[2001:db8::1]25"):
        with pytest.raises(ValueError):
            split_smart_host(bad)
