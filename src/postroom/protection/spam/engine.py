"""The anti-spam engine seam, and the one mapping of an engine's result to SCL, BCL and a category.

An engine (`SpamEngine`: Rspamd over HTTP, or the built-in scorer) reads a message and its facts and
concludes in its own terms: a score, an action its thresholds chose, the rules that fired, and how
much of that score is phishing evidence. `to_verdict` turns that into the spec's scales (§10.4), the
same way for every engine:

SCL (`to_scl`), from the action, like Rspamd's actions:

| engine action                         | SCL | meaning                       |
|---------------------------------------|-----|-------------------------------|
| skipped (the engine was told to skip) | -1  | skipped                       |
| no action, greylist, soft reject      | 0-1 | clean: 0 for a score below 0  |
| add header, rewrite subject           | 5-6 | spam: 6 from the midpoint of the spam and reject thresholds |
| reject                                | 9   | high-confidence spam          |

SCL 2-4, 7 and 8 are never given (the spec's filter does not use 2-4 or 7; 8 would need a finer
evidence than either engine has). A greylist or soft reject is the engine's advice to delay, not a
content verdict: it maps to clean. GTUBE, the standard test string, is SCL 9 whatever else is said.

Category, from SCL and the phishing part of the score (the phishing rules' own weights: Rspamd's
PHISHING, PHISHED_*, DMARC_POLICY_REJECT...; the built-in scorer's link, lure and spoof tags):

- GTUBE: HIGH_CONFIDENCE_SPAM;
- phishing score >= `Thresholds.high_phish`, or any phishing evidence with SCL 9:
  HIGH_CONFIDENCE_PHISH, SCL 9;
- phishing score >= `Thresholds.phish`, or any phishing evidence with SCL 5-6: PHISH, SCL at least 5;
- else SCL 9: HIGH_CONFIDENCE_SPAM; SCL 5-6: SPAM; else NONE. A single weak phishing rule on an
  otherwise clean message (a newsletter's tracking link whose text names the shop) stays NONE.

BCL is not the engine's: neither Rspamd nor the scorer has complaint data; both take it from the one
bulk detector (`bulk.bulk_level`), so every verdict carries one. Bulk never raises the SCL here: the
policy does that (`mark_bulk_as_spam`, the bulk threshold).

Guarantees: pure functions of their arguments; an engine raises `EngineUnavailable` (and nothing
else) when it cannot give a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from postroom.model.verdicts import MessageFacts, SpamCategory, SpamVerdict
from postroom.protection.mime import ParsedMessage

__all__ = [
    "GTUBE",
    "Action",
    "SpamEngine",
    "Thresholds",
    "to_scl",
    "to_verdict",
]

# The Generic Test for Unsolicited Bulk Email: every spam filter must call a message holding it spam.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
MAX_SYMBOLS = 64  # rule names a verdict keeps (for trace and the report header), highest score first


class SpamEngine(Protocol):
    """A content filter. `check` and `learn` raise `EngineUnavailable` when the engine cannot answer."""

    name: str

    async def check(self, message: bytes, parsed: ParsedMessage, facts: MessageFacts) -> SpamVerdict: ...

    async def learn(self, message: bytes, *, spam: bool) -> None:
        """A user's report: junk (`spam=True`) or not junk; the engine scores its like accordingly."""
        ...

    async def aclose(self) -> None:
        """Release what the engine holds (its connections); the app calls it once, at stop."""
        ...


class Action(StrEnum):
    """An engine's action, in Rspamd's words (the built-in scorer picks from the same list)."""

    NO_ACTION = "no action"
    GREYLIST = "greylist"
    SOFT_REJECT = "soft reject"
    ADD_HEADER = "add header"
    REWRITE_SUBJECT = "rewrite subject"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """An engine's scale: the score of its spam action, of its reject action, and of phishing."""

    spam: float = 6.0  # add header (Rspamd's default)
    reject: float = 15.0  # reject (Rspamd's default)
    phish: float = 4.5  # phishing score alone that makes PHISH
    high_phish: float = 7.0  # phishing score alone that makes HIGH_CONFIDENCE_PHISH

    def action(self, score: float) -> Action:
        """The action this scale gives `score` (what Rspamd computes on its side)."""
        if score >= self.reject:
            return Action.REJECT
        if score >= self.spam:
            return Action.ADD_HEADER
        return Action.NO_ACTION


def to_scl(action: Action, score: float, thresholds: Thresholds, *, skipped: bool = False) -> int:
    """The SCL of an engine's action and score (see the table in the module docstring)."""
    if action is Action.REJECT:
        return 9
    if action in (Action.ADD_HEADER, Action.REWRITE_SUBJECT):
        return 6 if score >= (thresholds.spam + thresholds.reject) / 2 else 5
    if skipped:
        return -1
    return 0 if score < 0 else 1


def to_verdict(
    *,
    engine: str,
    action: Action,
    score: float,
    thresholds: Thresholds,
    bcl: int,
    symbols: Iterable[tuple[str, float]] = (),
    phish_score: float = 0.0,
    gtube: bool = False,
    skipped: bool = False,
    reason: str = "",
) -> SpamVerdict:
    """One engine result on the spec's scales; `symbols` are (rule, score) pairs of what fired."""
    scl = to_scl(action, score, thresholds, skipped=skipped)
    if gtube:
        scl, category = 9, SpamCategory.HIGH_CONFIDENCE_SPAM
    elif scl >= 0 and phish_score > 0 and (phish_score >= thresholds.high_phish or scl >= 9):
        scl, category = 9, SpamCategory.HIGH_CONFIDENCE_PHISH
    elif scl >= 0 and phish_score > 0 and (phish_score >= thresholds.phish or scl >= 5):
        scl, category = max(scl, 5), SpamCategory.PHISH
    elif scl >= 9:
        category = SpamCategory.HIGH_CONFIDENCE_SPAM
    elif scl >= 5:
        category = SpamCategory.SPAM
    else:
        category = SpamCategory.NONE
    ranked = sorted(symbols, key=lambda pair: (-pair[1], pair[0]))[:MAX_SYMBOLS]
    return SpamVerdict(
        scl=scl,
        bcl=max(0, min(9, bcl)),
        category=category,
        engine=engine,
        score=round(score, 3),
        symbols=tuple(name for name, _ in ranked),
        reason=reason or f"{action.value}, score {score:.2f} of {thresholds.reject:g}",
    )
