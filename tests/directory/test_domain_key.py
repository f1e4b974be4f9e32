"""derive_domain_key: the MX label of a domain (spec §1.3, §14.1)."""

from __future__ import annotations

import re

import pytest

from postroom.directory.domain_key import MAX_LABEL, derive_domain_key

LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def nothing_taken(_key: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("domain", "key"),
    [
        ("contoso.com", "contoso-com"),
        ("marketing.contoso.com", "marketing-contoso-com"),
        ("octo-bot.io", "octobot-io01b"),
        ("a-b.com", "ab-com01b"),
        ("a.b-com", "a-bcom01b"),
        ("xn--bcher-kva.de", "xnbcherkva-de01b"),
    ],
)
def test_derivation(domain: str, key: str) -> None:
    assert derive_domain_key(domain, nothing_taken) == key


def test_hyphen_and_dot_variants_stay_distinct() -> None:
    assert derive_domain_key("a-b.com", nothing_taken) != derive_domain_key("a.b-com", nothing_taken)


@pytest.mark.parametrize(
    ("domain", "taken", "key"),
    [
        ("contoso.com", {"contoso-com"}, "contoso-com01c"),
        ("a--b.com", {"ab-com01b"}, "ab-com01c"),
        ("a--b.com", {"ab-com01b", "ab-com01c"}, "ab-com01d"),
        ("contoso.com", {"contoso-com", "contoso-com01c", "contoso-com01d"}, "contoso-com01e"),
    ],
)
def test_collisions_take_the_next_suffix(domain: str, taken: set[str], key: str) -> None:
    assert derive_domain_key(domain, taken.__contains__) == key


LONG = ".".join(["a" * 30, "b" * 30, "example", "com"])  # 75 characters before the cut
LONG_HYPHEN = ".".join(["x-" * 15 + "y", "b" * 30, "example", "com"])


@pytest.mark.parametrize("domain", [LONG, LONG_HYPHEN, ".".join(["c" * 63] * 3) + ".com"])
def test_long_keys_are_cut_with_a_hash_and_fit_one_label(domain: str) -> None:
    key = derive_domain_key(domain, nothing_taken)
    assert len(key) <= MAX_LABEL
    assert LABEL.fullmatch(key), key
    if "-" in domain:
        assert key.endswith("01b")
    taken_once = derive_domain_key(domain, {key}.__contains__)
    assert taken_once != key and len(taken_once) <= MAX_LABEL and LABEL.fullmatch(taken_once)


def test_long_keys_of_different_domains_differ() -> None:
    other = LONG.replace("example", "examplf")
    assert derive_domain_key(LONG, nothing_taken) != derive_domain_key(other, nothing_taken)


def test_every_suffix_taken_still_gives_a_label() -> None:
    key = derive_domain_key("contoso.com", lambda candidate: candidate.startswith("contoso-com"))
    assert len(key) <= MAX_LABEL and LABEL.fullmatch(key)
    assert not key.startswith("contoso-com01")
