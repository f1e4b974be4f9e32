"""IMAP sequence sets (RFC 3501 §9 sequence-set, `*` per §6.4.8), kept as ranges, never expanded.

`SequenceSet.parse("2:4,7,9:*")` reads a set of message sequence numbers or UIDs; `*` stands for the
largest number in use, given later (`members(largest)`, `contains(n, largest)`, `select(values,
largest)`), so one parsed set serves a folder that changes. A range reads either way round (`*:3` is
`3:*`). `compact_uid_set` writes UIDs back in the same form for COPYUID and APPENDUID (RFC 4315).

Bounds: at most `MAX_RANGES` ranges per set (a longer set is refused), numbers are nz-number (1 to
2^32-1). Work is per range, never per number in a range: `1:4294967295` costs what `1` costs, and
`members` yields only numbers up to `largest` (the folder's size or its highest UID).

*Security:* the text is a client's; every fault is a `SequenceError` whose message is the BAD reply.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

MAX_RANGES = 4096  # ranges in one set: a command line (8192 octets) holds no more than this
MAX_NUMBER = 4294967295  # nz-number's largest (RFC 3501 §9)
STAR = 0  # `*` inside a parsed range, resolved against `largest` on use


class SequenceError(ValueError):
    """The set is not a valid sequence set; the message is the BAD reply."""


@dataclass(frozen=True, slots=True)
class SequenceSet:
    ranges: tuple[tuple[int, int], ...]  # (first, last) as written; STAR for `*`

    @classmethod
    def parse(cls, text: str, *, max_ranges: int = MAX_RANGES) -> SequenceSet:
        if not text:
            raise SequenceError("Empty sequence set")
        pieces = text.split(",")
        if len(pieces) > max_ranges:
            raise SequenceError(f"Sequence set has more than {max_ranges} ranges")
        ranges: list[tuple[int, int]] = []
        for piece in pieces:
            first, colon, last = piece.partition(":")
            low = _number(first)
            ranges.append((low, _number(last) if colon else low))
        return cls(tuple(ranges))

    @property
    def uses_star(self) -> bool:
        return any(STAR in pair for pair in self.ranges)

    def resolved(self, largest: int) -> tuple[tuple[int, int], ...]:
        """Ascending, merged (low, high) ranges with `*` as `largest` (may pass `largest`)."""
        return _resolve(self.ranges, largest)

    def highest(self, largest: int) -> int:
        """The largest number the set names (0 for none): a FETCH of a sequence number past the
        folder's size is a BAD, a UID past the highest is simply absent (RFC 3501 §6.4.8)."""
        merged = self.resolved(largest)
        return merged[-1][1] if merged else 0

    def members(self, largest: int) -> Iterator[int]:
        """The numbers of the set from 1 to `largest`, ascending, each once."""
        for low, high in self.resolved(largest):
            if low > largest:
                return
            yield from range(low, min(high, largest) + 1)

    def contains(self, number: int, largest: int) -> bool:
        merged = self.resolved(largest)
        index = bisect.bisect_right(merged, (number, MAX_NUMBER + 1)) - 1
        return index >= 0 and merged[index][0] <= number <= merged[index][1]

    def select(self, values: Sequence[int], largest: int) -> list[int]:
        """The members of `values` (ascending, e.g. a folder's UIDs) that the set holds: work per
        range by bisection, so `1:*` over a folder costs its size and not 2^32."""
        found: list[int] = []
        for low, high in self.resolved(largest):
            start = bisect.bisect_left(values, low)
            end = bisect.bisect_right(values, high, lo=start)
            found.extend(values[start:end])
        return found


@functools.lru_cache(maxsize=64)
def _resolve(ranges: tuple[tuple[int, int], ...], largest: int) -> tuple[tuple[int, int], ...]:
    # `*` in an empty folder names nothing: `1:*` there is an empty set, not a set holding 1.
    spans: list[tuple[int, int]] = []
    for first, last in ranges:
        if not largest and STAR in (first, last):
            continue
        first, last = first or largest, last or largest
        spans.append((min(first, last), max(first, last)))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return tuple(merged)


def _number(text: str) -> int:
    if text == "*":
        return STAR
    if not text.isascii() or not text.isdigit() or text.startswith("0") or len(text) > 10:
        raise SequenceError(f"Invalid sequence set: {text[:20]!r} is not a number from 1 to {MAX_NUMBER}")
    number = int(text)
    if number > MAX_NUMBER:
        raise SequenceError(f"Invalid sequence set: {text} is over {MAX_NUMBER}")
    return number


def compact_uid_set(uids: Iterable[int]) -> str:
    """UIDs in the order given as a set ("1:3,7"): runs of consecutive ascending UIDs become ranges,
    the order is kept (COPYUID pairs its source and destination sets by position, RFC 4315 §3)."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(f"{low}" if low == high else f"{low}:{high}" for low, high in runs)
