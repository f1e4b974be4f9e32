"""Address.parse: the shapes accepted, the faults named, and the key used for matching."""

from __future__ import annotations

import pytest

from postroom.model import Address, AddressError, normalize_domain

LONGEST_DOMAIN = ".".join(["a" * 63] * 4)  # 255 octets


@pytest.mark.parametrize(
    ("text", "local", "domain", "key"),
    [
        ("alice@contoso.com", "alice", "contoso.com", "alice@contoso.com"),
        ("Alice@Contoso.COM", "Alice", "contoso.com", "alice@contoso.com"),
        ("user+tag@example.com", "user+tag", "example.com", "user+tag@example.com"),
        ("first.last@sub.example.org", "first.last", "sub.example.org", "first.last@sub.example.org"),
        ("alice@bücher.de", "alice", "xn--bcher-kva.de", "alice@xn--bcher-kva.de"),
        ("alice@BÜCHER.DE", "alice", "xn--bcher-kva.de", "alice@xn--bcher-kva.de"),
        ("alice@xn--bcher-kva.de", "alice", "xn--bcher-kva.de", "alice@xn--bcher-kva.de"),
        ("用户@例子.广告", "用户", "xn--fsqu00a.xn--4rr70v", "用户@xn--fsqu00a.xn--4rr70v"),
        ("ÄÖÜ@example.com", "ÄÖÜ", "example.com", "äöü@example.com"),
        ("Straße@example.com", "Straße", "example.com", "strasse@example.com"),
        ('"john doe"@example.com', '"john doe"', "example.com", '"john doe"@example.com'),
        ('"a\\"b"@example.com', '"a\\"b"', "example.com", '"a\\"b"@example.com'),
        ('"a@b"@example.com', '"a@b"', "example.com", '"a@b"@example.com'),
        ("postmaster@[192.0.2.1]", "postmaster", "[192.0.2.1]", "postmaster@[192.0.2.1]"),
        ("a" * 64 + "@example.com", "a" * 64, "example.com", "a" * 64 + "@example.com"),
        ("é" * 32 + "@example.com", "é" * 32, "example.com", "é" * 32 + "@example.com"),
        (f"x@{LONGEST_DOMAIN}", "x", LONGEST_DOMAIN, f"x@{LONGEST_DOMAIN}"),
    ],
)
def test_parse_accepts(text: str, local: str, domain: str, key: str) -> None:
    address = Address.parse(text)
    assert (address.local, address.domain, address.key) == (local, domain, key)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "not of the form local@domain"),
        ("alice", "not of the form local@domain"),
        ("@contoso.com", "not of the form local@domain"),
        ("alice@", "the domain is empty"),
        ("al ice@contoso.com", "local part"),
        ("alice..b@contoso.com", "local part"),
        (".alice@contoso.com", "local part"),
        ("alice.@contoso.com", "local part"),
        ('"unterminated@contoso.com', "local part"),
        ("a(comment)@contoso.com", "local part"),
        ("alice@contoso.com\r\nRCPT TO:<x@evil.example>", "control character"),
        ("ali\x00ce@contoso.com", "control character"),
        ("ali\tce@contoso.com", "control character"),
        ("ali\x7fce@contoso.com", "control character"),
        ("ali\x85ce@contoso.com", "control character"),  # C1 (NEL)
        ("alice@ contoso.com", "white space"),
        ("alice@contoso.com ", "white space"),
        ("alice@contoso.com\u3000", "white space"),
        ("alice@-contoso.com", "invalid label"),
        ("alice@contoso-.com", "invalid label"),
        ("alice@contoso_mail.com", "invalid label"),
        ("alice@contoso..com", "invalid label"),
        ("alice@contoso.com.", "ends with a dot"),  # RFC 5321 §4.1.2: no root dot in a mailbox's domain
        ("alice@contoso.com..", "ends with a dot"),
        ("alice@.", "ends with a dot"),
        ("alice@" + "a" * 64 + ".com", "invalid label"),
        ("alice@☃.com", "not a valid internationalized domain"),
        ("a" * 65 + "@example.com", "longer than 64 octets"),
        ("é" * 33 + "@example.com", "longer than 64 octets"),  # 33 characters, 66 octets
        ("x@" + ".".join(["a" * 50] * 6), "longer than 255 octets"),
    ],
)
def test_parse_rejects_naming_the_fault(text: str, fault: str) -> None:
    with pytest.raises(AddressError, match=fault.replace("(", r"\(")):
        Address.parse(text)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@contoso.com", "ALICE@CONTOSO.COM"),
        ("Alice@contoso.com", "alice@Contoso.Com"),
        ("alice@bücher.de", "ALICE@xn--bcher-kva.de"),
        ("Ä@BÜCHER.de", "ä@bücher.DE"),
        ("Straße@example.com", "STRASSE@example.com"),
    ],
)
def test_variants_share_one_key(first: str, second: str) -> None:
    assert Address.parse(first).key == Address.parse(second).key


@pytest.mark.parametrize(
    ("text", "needs_smtputf8", "wire", "display"),
    [
        ("alice@contoso.com", False, "alice@contoso.com", "alice@contoso.com"),
        ("alice@bücher.de", False, "alice@xn--bcher-kva.de", "alice@bücher.de"),
        ("用户@例子.广告", True, "用户@xn--fsqu00a.xn--4rr70v", "用户@例子.广告"),
        ("Jörg@example.com", True, "Jörg@example.com", "Jörg@example.com"),
    ],
)
def test_forms_for_the_wire_and_for_people(text: str, needs_smtputf8: bool, wire: str, display: str) -> None:
    address = Address.parse(text)
    assert address.needs_smtputf8 is needs_smtputf8
    assert str(address) == wire
    assert address.display == display


@pytest.mark.parametrize(
    ("text", "ascii_domain"),
    [
        (" Contoso.COM. ", "contoso.com"),
        ("Bücher.de", "xn--bcher-kva.de"),
        ("[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_normalize_domain(text: str, ascii_domain: str) -> None:
    assert normalize_domain(text) == ascii_domain


@pytest.mark.parametrize("text", ["", " ", ".", "exa mple.com", "-a.com"])
def test_normalize_domain_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        normalize_domain(text)
