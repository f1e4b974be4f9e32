"""Garbled SPF records for fuzzing: seeded, so a failure is reproduced by its seed and iteration.

Pieces of the grammar (mechanism names, qualifiers, separators, macros, numbers, names, addresses) in
random order, and now and then random characters, including control and non-ASCII ones.
"""

from __future__ import annotations

import random

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists", "redirect", "exp", "x-note")
PIECES = (
    *MECHANISMS,
    *("+", "-", "~", "?", "!", ":", "/", "//", "=", "%", "%{", "}", "%{d}", "%{i1r}", "%%", "%-", ".", ".."),
    *("0", "24", "64", "128", "033", "999", "example.com", "host", "192.0.2.1", "2001:db8::", "::1"),
    *(" ", " ", " ", "\t", "\x00", "\x7f", "\u00e9", "\u0663", "\U0001f600", ";", '"', "\\"),
)


CIDR_PIECES = ("/", "//", "/24", "//64", "/0", "/033", "/x", "")
TERM_TAILS = ("/", "/", "//", ":", "=", "0", "24", "64", "129", ":example.com", "%{d}", ".", "x")


def garbled_term(rng: random.Random) -> str:
    """One term that is nearly right: a qualifier, a mechanism or modifier name, a garbled argument."""
    head = rng.choice(("", "+", "-", "~", "?")) + rng.choice(MECHANISMS)
    if rng.random() < 0.5:  # a run of prefix lengths, right or wrong: the part the grammar puts last
        return head + "".join(rng.choice(CIDR_PIECES) for _ in range(rng.randrange(1, 4)))
    return head + "".join(rng.choice(TERM_TAILS) for _ in range(rng.randrange(0, 5)))


def garbled_terms(rng: random.Random) -> str:
    """Text to follow `v=spf1`: nearly right terms, pieces of the grammar, or random characters."""
    roll = rng.random()
    if roll < 0.1:
        return "".join(chr(rng.randrange(0, 0x250)) for _ in range(rng.randrange(0, 40)))
    if roll < 0.55:
        return " ".join(garbled_term(rng) for _ in range(rng.randrange(1, 3)))
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 14)))


def garbled_spf(rng: random.Random) -> str:
    """A record that may or may not begin like an SPF record."""
    return rng.choice(("v=spf1 ", "v=spf1", "V=SPF1 ", "")) + garbled_terms(rng)
