"""SRS: rewriting forwarded senders (SRS0, SRS1 chains, the null sender) and decoding bounces, seen
from an attacker too: forged and foreign-key hashes, expired and future timestamps, case changes,
fields moved between the domain and the local part, malformed addresses."""

from __future__ import annotations

import pytest

from postroom.model import Address
from postroom.routing import Srs, SrsError
from postroom.routing.srs import DAY, HASH_LENGTH

NOW = 1_700_000_000.0
KEY = b"0123456789abcdef0123456789abcdef"


def srs(at: float = NOW, key: bytes = KEY, domain: str = "postroom.test") -> Srs:
    return Srs(domain, key, max_age_days=21, clock=lambda: at)


def test_srs0_round_trip() -> None:
    rewritten = srs().forward("Alice@Example.COM")
    local, _, domain = rewritten.rpartition("@")
    assert domain == "postroom.test"
    tag, code, stamp, orig_domain, orig_local = local.split("=")
    assert (tag, len(code), len(stamp), orig_domain, orig_local) == (
        "SRS0",
        HASH_LENGTH,
        2,
        "Example.COM",
        "Alice",
    )
    assert srs().reverse(Address.parse(rewritten)) == Address.parse("Alice@example.com")


def test_the_null_sender_is_never_rewritten() -> None:
    assert srs().forward("") == ""


def test_an_srs0_sender_becomes_srs1_and_decodes_to_the_first_forwarder() -> None:
    first = srs(domain="fwd1.example", key=b"their key")
    original = first.forward("bob@origin.example")
    ours = srs().forward(original)
    assert ours.startswith("SRS1=") and ours.endswith(
        "=fwd1.example==" + original.split("=", 1)[1].split("@")[0] + "@postroom.test"
    )
    back = srs().reverse(Address.parse(ours))
    assert back == Address.parse(original)  # the first forwarder verifies its own SRS0
    assert first.reverse(back) == Address.parse("bob@origin.example")
    # A third forwarder keeps the first forwarder and hashes again.
    third = srs(domain="fwd3.example", key=b"third").forward(ours)
    assert third.startswith("SRS1=") and "=fwd1.example==" in third and third.endswith("@fwd3.example")
    assert srs(domain="fwd3.example", key=b"third").reverse(Address.parse(third)) == Address.parse(original)


def test_an_srs1_whose_first_forwarder_is_us_decodes_all_the_way() -> None:
    ours = srs().forward("carol@origin.example")
    again = srs().forward(ours)  # the message came back through us
    assert srs().reverse(Address.parse(again)) == Address.parse("carol@origin.example")


def test_a_timestamp_is_valid_for_max_age_days_and_no_longer() -> None:
    rewritten = Address.parse(srs().forward("dave@origin.example"))
    assert srs(at=NOW + 21 * DAY).reverse(rewritten) == Address.parse("dave@origin.example")
    with pytest.raises(SrsError, match="expired"):
        srs(at=NOW + 22 * DAY).reverse(rewritten)
    with pytest.raises(SrsError, match="expired"):
        srs(at=NOW + 400 * DAY).reverse(rewritten)


def test_a_timestamp_from_the_future_is_expired() -> None:
    future = Address.parse(srs(at=NOW + 5 * DAY).forward("erin@origin.example"))
    with pytest.raises(SrsError, match="expired"):
        srs().reverse(future)


def test_a_case_change_in_transit_decodes_to_the_same_address() -> None:
    rewritten = srs().forward("Frank@Origin.example")
    for variant in (rewritten.lower(), rewritten.upper()):
        decoded = srs().reverse(Address.parse(variant))
        assert decoded.key == Address.parse("frank@origin.example").key


def tamper(address: str, field: int, value: str) -> Address:
    local, _, domain = address.rpartition("@")
    parts = local.split("=")
    parts[field] = value
    return Address.parse("=".join(parts) + "@" + domain)


@pytest.mark.parametrize(
    "forged",
    [
        "SRS0=AAAAAA=AB=victim.example=relay",  # an invented hash
        "SRS0=AAAAAA=AB=victim.example=relay".lower(),
    ],
)
def test_an_invented_srs_address_is_refused(forged: str) -> None:
    with pytest.raises(SrsError):
        srs().reverse(Address.parse(forged + "@postroom.test"))


def test_an_attacker_cannot_move_a_valid_hash_onto_other_fields() -> None:
    valid = srs().forward("alice@ex.com")
    code = valid.split("=")[1]
    for forged in (
        tamper(valid, 3, "ex.comalice"),  # the domain swallows the local part
        tamper(valid, 3, "evil.example"),  # another domain
        tamper(valid, 4, "mallory"),  # another local part
        tamper(valid, 2, "AA"),  # another timestamp (a reused one made younger)
        Address.parse(f"SRS0={code}=AA=ex.co=malice@postroom.test"),
    ):
        with pytest.raises(SrsError, match="hash"):
            srs().reverse(forged)


def test_a_hash_made_with_another_key_is_refused() -> None:
    theirs = srs(key=b"attacker key").forward("victim@example.com")
    with pytest.raises(SrsError, match="hash"):
        srs().reverse(Address.parse(theirs))
    srs1 = srs(key=b"attacker key").forward(srs(domain="fwd.example").forward("victim@example.com"))
    with pytest.raises(SrsError, match="hash"):
        srs().reverse(Address.parse(srs1))


@pytest.mark.parametrize(
    "malformed",
    [
        "SRS0=@postroom.test",
        "SRS0=ABCDEF@postroom.test",
        "SRS0=ABCDEF=AB=@postroom.test",
        "SRS0=ABCDEF=AB=example.com=@postroom.test",
        "SRS0=ABC=AB=example.com=x@postroom.test",  # a short hash
        "SRS0=ABCDEF=A1=example.com=x@postroom.test",  # not base32
        "SRS1=ABCDEF=fwd.example=x@postroom.test",  # no ==
        "SRS1=ABCDEF===x@postroom.test",
    ],
)
def test_malformed_srs_addresses_are_refused(malformed: str) -> None:
    with pytest.raises(SrsError):
        srs().reverse(Address.parse(malformed))


def test_only_srs_local_parts_at_the_srs_domain_are_ours() -> None:
    assert srs().names(Address.parse("srs0=x@POSTROOM.test"))
    assert srs().names(Address.parse("SRS1=x@postroom.test"))
    assert not srs().names(Address.parse("SRS0=x@other.example"))
    assert not srs().names(Address.parse("postmaster@postroom.test"))
    with pytest.raises(ValueError):
        Srs("postroom.test", b"")
