"""What users reported (junk, not junk), kept for the built-in spam engine: near-duplicate fingerprints
of the reported messages, and complaints per bulk sender.

A report (`learn`) keeps the message's fingerprint with its label; a later message that is a near
duplicate of it (`match`) is scored as the report said: a message reported as junk scores high the
next time it or a variant comes (another greeting, another tracking number), one reported as not junk
low. A junk report about a bulk message also counts a complaint against its sender (List-Id or From
domain; `complaints`), which raises the BCL of that sender's next mailings; a not-junk report takes
one back.

The fingerprint is a bottom-k sketch (k = `SKETCH`) of the hashed 4-word shingles of the message's
normalized words: the subject and the text, lower case, digits folded, each URL reduced to its host,
plus one token per non-text part's content. Two messages match when the sketch of their union says
their shingle sets overlap by `SIMILARITY` or more (an estimate of Jaccard similarity). A message with
no words and no parts has no fingerprint and matches nothing.

Guarantees: bounded: at most `max_fingerprints` fingerprints (the oldest go first) and `max_senders`
senders (the least recently reported go first); a newer report about a near duplicate replaces the
older one, whatever its label. With a `path`, the store is one JSON file written whole on each report
(a temporary file renamed over it) under an exclusive lock (`<path>.lock`), so the worker processes of
a node share it: each reads it again when its modification time changed (`refresh`, at most once per
`REFRESH_SECONDS`). Without a path it lives in memory only. A file that cannot be read (missing,
corrupt, another version) is an empty store; a report that cannot be written raises OSError (the
process keeps it in memory until it next reads the file).

Security: the text hashed comes from strangers; only 32-bit hashes and sender keys (bounded to 200
characters) are kept, never message text.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postroom.protection.mime import ParsedMessage

__all__ = ["LearnedStore", "Match", "fingerprint"]

SKETCH = 24  # hashes in a fingerprint
SHINGLE = 4  # words in a shingle
SIMILARITY = 0.6  # estimated Jaccard similarity from which a message matches a report
MAX_WORDS = 5_000  # words of a message that are fingerprinted
MAX_SENDER = 200
REFRESH_SECONDS = 1.0
FILE_VERSION = 1

_URL = re.compile(r"https?://([^/\s<>\"')\]]+)[^\s<>\"')\]]*", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Match:
    spam: bool  # the report's label
    similarity: float


def fingerprint(parsed: ParsedMessage) -> tuple[int, ...]:
    """The bottom-k sketch of `parsed` (sorted hashes), () when it has nothing to fingerprint."""
    text = (parsed.header("Subject") or "") + "\n" + parsed.text
    text = _URL.sub(lambda m: " " + m.group(1) + " ", text.lower())
    words = _WORD.findall(_DIGITS.sub("0", text))[:MAX_WORDS]
    words += [
        f"part{zlib.crc32(part.payload):08x}"
        for part in parsed.parts
        if not part.content_type.startswith("text/") and part.payload
    ]
    if not words:
        return ()
    width = min(SHINGLE, len(words))
    hashes = {
        zlib.crc32(" ".join(words[i : i + width]).encode("utf-8", "replace"))
        for i in range(len(words) - width + 1)
    }
    return tuple(sorted(hashes)[:SKETCH])


def similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """The estimated Jaccard similarity of the shingle sets two sketches were taken from."""
    union = sorted(set(a) | set(b))[:SKETCH]
    if not union:
        return 0.0
    both = set(a) & set(b)
    return sum(1 for h in union if h in both) / len(union)


class LearnedStore:
    """Reports of junk and not junk; see the module docstring."""

    def __init__(
        self, path: Path | None = None, *, max_fingerprints: int = 10_000, max_senders: int = 10_000
    ) -> None:
        self.path = path
        self.max_fingerprints = max_fingerprints
        self.max_senders = max_senders
        self._fingerprints: OrderedDict[tuple[int, ...], bool] = OrderedDict()  # sketch -> spam
        self._index: dict[int, set[tuple[int, ...]]] = {}  # hash -> sketches holding it
        self._complaints: OrderedDict[str, int] = OrderedDict()
        self._mtime = 0
        self._checked = 0.0
        if path is not None:
            self._load()

    def __len__(self) -> int:
        return len(self._fingerprints)

    # -- reading

    def match(self, sketch: tuple[int, ...]) -> Match | None:
        """The most similar report at `SIMILARITY` or more, or None."""
        if not sketch or not self._fingerprints:
            return None
        candidates = {other for h in sketch for other in self._index.get(h, ())}
        best: Match | None = None
        for other in candidates:
            score = similarity(sketch, other)
            if score >= SIMILARITY and (best is None or score > best.similarity):
                best = Match(self._fingerprints[other], score)
        return best

    def complaints(self, sender: str) -> int:
        return self._complaints.get(sender[:MAX_SENDER], 0) if sender else 0

    def refresh(self) -> None:
        """Read the file again if another process wrote it (checked at most every REFRESH_SECONDS)."""
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        with contextlib.suppress(OSError):
            if self.path.stat().st_mtime_ns != self._mtime:
                self._load()

    # -- reporting

    def learn(self, parsed: ParsedMessage, *, spam: bool, sender: str = "") -> None:
        """Keep a report; `sender`: the bulk sender to count a complaint against ("" for none)."""
        sketch = fingerprint(parsed)
        with self._locked():
            if self.path is not None:
                self._load()
            if sketch:
                for other in [o for o in self._candidates(sketch) if similarity(sketch, o) >= SIMILARITY]:
                    self._forget(other)
                self._add(sketch, spam)
            if sender:
                self._complain(sender[:MAX_SENDER], 1 if spam else -1)
            if self.path is not None:
                self._save()

    def _candidates(self, sketch: tuple[int, ...]) -> set[tuple[int, ...]]:
        return {other for h in sketch for other in self._index.get(h, ())}

    def _add(self, sketch: tuple[int, ...], spam: bool) -> None:
        self._fingerprints[sketch] = spam
        for h in sketch:
            self._index.setdefault(h, set()).add(sketch)
        while len(self._fingerprints) > self.max_fingerprints:
            self._forget(next(iter(self._fingerprints)))

    def _forget(self, sketch: tuple[int, ...]) -> None:
        self._fingerprints.pop(sketch, None)
        for h in sketch:
            holders = self._index.get(h)
            if holders is not None:
                holders.discard(sketch)
                if not holders:
                    del self._index[h]

    def _complain(self, sender: str, step: int) -> None:
        count = max(0, self._complaints.pop(sender, 0) + step)
        if count:
            self._complaints[sender] = count
        while len(self._complaints) > self.max_senders:
            self._complaints.popitem(last=False)

    # -- the file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        assert self.path is not None
        self._fingerprints.clear()
        self._index.clear()
        self._complaints.clear()
        try:
            self._mtime = self.path.stat().st_mtime_ns
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
                return
            for label, hashes in data.get("fingerprints", []):
                self._add(tuple(sorted(int(h) for h in hashes))[:SKETCH], bool(label))
            for sender, count in data.get("complaints", {}).items():
                self._complain(str(sender)[:MAX_SENDER], int(count))
        except (OSError, ValueError, TypeError, AttributeError):
            return  # an unreadable store is an empty one (see the module docstring)

    def _save(self) -> None:
        assert self.path is not None
        data = {
            "version": FILE_VERSION,
            "fingerprints": [[int(spam), list(sketch)] for sketch, spam in self._fingerprints.items()],
            "complaints": dict(self._complaints),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, self.path)
        self._mtime = self.path.stat().st_mtime_ns
