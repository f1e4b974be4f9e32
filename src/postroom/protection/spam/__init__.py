"""Anti-spam (spec §10.4): the engine seam, its two engines, and the mapping to SCL, BCL and category.

`SpamEngine` is what the pipeline calls: `check(message, parsed, facts) -> SpamVerdict`, and
`learn(message, spam=...)` for junk and not-junk reports; both raise `EngineUnavailable` (and
nothing else) when the engine cannot answer; `aclose()` at stop. Two engines: `RspamdEngine`
(production: Rspamd over HTTP) and `BuiltinSpamEngine` (the embedded default: facts -> tags -> one
score, with a `LearnedStore` of reports). Both map their result with `to_verdict` (`engine`), and
both take the BCL from the one bulk detector (`bulk_level`).

Modules: `engine` (the seam and the mapping), `bulk` (BCL), `rspamd`, `builtin`, `learned`.
"""

from postroom.protection.spam.builtin import BuiltinSpamEngine
from postroom.protection.spam.bulk import Bulk, bulk_level
from postroom.protection.spam.engine import GTUBE, Action, SpamEngine, Thresholds, to_scl, to_verdict
from postroom.protection.spam.learned import LearnedStore
from postroom.protection.spam.rspamd import RspamdEngine

__all__ = [
    "GTUBE",
    "Action",
    "BuiltinSpamEngine",
    "Bulk",
    "LearnedStore",
    "RspamdEngine",
    "SpamEngine",
    "Thresholds",
    "bulk_level",
    "to_scl",
    "to_verdict",
]
