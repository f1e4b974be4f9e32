"""IMAP SEARCH, sans-IO: the search keys read into a program, and the program run on one message.

`parse_search(arguments, utf8=...)` reads SEARCH / UID SEARCH's arguments (RFC 3501 §6.4.4): an
optional `CHARSET UTF-8` or `CHARSET US-ASCII` first (another charset is a `SearchError` with the
code `BADCHARSET (UTF-8 US-ASCII)`, answered NO), then keys, all of which must hold: ALL; ANSWERED,
DELETED, DRAFT, FLAGGED, SEEN, RECENT, NEW, OLD and their UN- forms; KEYWORD / UNKEYWORD; LARGER /
SMALLER; BEFORE / ON / SINCE (internal date) and SENTBEFORE / SENTON / SENTSINCE (the Date: header,
its own day); FROM, TO, CC, BCC, SUBJECT, HEADER name, BODY, TEXT; UID set, a sequence set; NOT, OR,
parentheses; MODSEQ (RFC 7162, entry name and type read and not used: flags share one modseq here).

Text keys match a case-insensitive substring of the decoded text: header values with RFC 2047 words
decoded, body text with transfer encodings and charsets decoded (`MessageView.body_text`). A search
string is UTF-8: with CHARSET UTF-8, or when the session enabled UTF8=ACCEPT (`utf8=True`, RFC 6855);
otherwise it must be US-ASCII (RFC 3501's default), and 8-bit text without a charset is a BAD.

`SearchProgram.needs` says what of each message the program reads ("none", "header", "full") and
`matches(subject, messages=..., highest_uid=...)` runs it on one message: the subject gives seq, uid,
flags, internal date, size, modseq and `view()` (the session loads the bytes only when asked); the
folder's message count and highest UID stand for `*` in sets. `uses_modseq` tells the session to end
its SEARCH response with `(MODSEQ n)` (RFC 7162 §3.1.5).

*Security:* the keys are a logged-in client's; the program is bounded (`MAX_KEYS` keys of which
`MAX_TEXT_KEYS` search text, `MAX_DEPTH` levels of NOT / OR / parentheses; a message's decoded text is
made once however many keys read it), every fault is a `SearchError` with its reply, and matching is
substring search over bounded text (no pattern a client writes is compiled into a regex).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postroom.imap.fetch import MAX_MODSEQ, MONTHS, Needs
from postroom.imap.message import MessageView
from postroom.imap.sequence import SequenceError, SequenceSet
from postroom.imap.syntax import Argument, Atom, String

MAX_KEYS = 1000  # search keys in one program
MAX_TEXT_KEYS = 64  # keys that search text (FROM ... TEXT): each reads decoded text of every message
MAX_DEPTH = 64  # levels of NOT, OR and parentheses
CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"

_MONTHS = {name.upper(): index for index, name in enumerate(MONTHS, 1)}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
_NEEDS_ORDER = {"none": 0, "header": 1, "full": 2}


class SearchError(ValueError):
    """The search is not valid: answer `status` (BAD or NO) with `code` (or none) and the message."""

    def __init__(self, message: str, *, status: str = "BAD", code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def bad_charset(self) -> bool:
        """The charset is not one of CHARSETS: NO [BADCHARSET (UTF-8 US-ASCII)] (RFC 3501 §6.4.4)."""
        return self.code == BADCHARSET


class SearchSubject(Protocol):
    """One message as a search sees it (the session's record plus its position)."""

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    def view(self) -> MessageView: ...


@dataclass(frozen=True, slots=True)
class _Folder:
    messages: int | None
    highest_uid: int | None


_Test = Callable[[SearchSubject, _Folder], bool]


@dataclass(frozen=True, slots=True)
class SearchProgram:
    test: _Test
    needs: Needs
    uses_modseq: bool
    uses_star: bool  # a set holds `*`: `matches` needs the folder's size and highest UID

    def matches(
        self, subject: SearchSubject, *, messages: int | None = None, highest_uid: int | None = None
    ) -> bool:
        if self.uses_star and (messages is None or highest_uid is None):
            raise ValueError("this search names `*`: give the folder's messages and highest_uid")
        return self.test(subject, _Folder(messages, highest_uid))


def parse_search(arguments: Sequence[Argument], *, utf8: bool) -> SearchProgram:
    position = 0
    if arguments and isinstance(arguments[0], Atom) and arguments[0].text.upper() == "CHARSET":
        if len(arguments) < 2:
            raise SearchError("CHARSET needs a charset name")
        charset = _text(arguments[1], "charset").upper()
        if charset not in CHARSETS:
            raise SearchError(f"Charset {charset[:40]} is not supported", status="NO", code=BADCHARSET)
        utf8 = utf8 or charset == "UTF-8"
        position = 2
    if position >= len(arguments):
        raise SearchError("SEARCH needs at least one search key")
    reader = _Reader(arguments, position, utf8=utf8)
    tests: list[_Test] = []
    while reader.position < len(arguments):
        tests.append(reader.key(0))
    return SearchProgram(_all(tests), reader.needs, reader.uses_modseq, reader.uses_star)


def _all(tests: list[_Test]) -> _Test:
    if len(tests) == 1:
        return tests[0]
    return lambda subject, folder: all(test(subject, folder) for test in tests)


def _text(argument: Argument, what: str) -> str:
    if isinstance(argument, Atom):
        return argument.text
    if isinstance(argument, String):
        return argument.octets.decode("ascii", "replace")
    raise SearchError(f"Expected a {what}")


class _Reader:
    def __init__(self, arguments: Sequence[Argument], position: int, *, utf8: bool) -> None:
        self.arguments = arguments
        self.position = position
        self.utf8 = utf8
        self.keys = 0
        self.text_keys = 0
        self.needs: Needs = "none"
        self.uses_modseq = False
        self.uses_star = False

    def _next(self, what: str) -> Argument:
        if self.position >= len(self.arguments):
            raise SearchError(f"Missing {what} in SEARCH")
        argument = self.arguments[self.position]
        self.position += 1
        return argument

    def _need(self, needs: Needs) -> None:
        if _NEEDS_ORDER[needs] > _NEEDS_ORDER[self.needs]:
            self.needs = needs

    def _string(self) -> str:
        self.text_keys += 1
        if self.text_keys > MAX_TEXT_KEYS:
            raise SearchError(f"SEARCH takes at most {MAX_TEXT_KEYS} text keys")
        argument = self._next("search text")
        if isinstance(argument, Atom):
            octets = argument.text.encode()
        elif isinstance(argument, String):
            octets = argument.octets
        else:
            raise SearchError("Expected search text")
        if not self.utf8 and not octets.isascii():
            raise SearchError("8-bit search text needs CHARSET UTF-8")
        try:
            return octets.decode("utf-8").casefold()
        except UnicodeDecodeError as error:
            raise SearchError("Search text is not valid UTF-8") from error

    def _number(self, limit: int = 4294967295) -> int:
        text = _text(self._next("number"), "number")
        if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > limit:
            raise SearchError(f"Invalid number in SEARCH: {text[:20]!r}")
        return int(text)

    def _date(self) -> datetime.date:
        text = _text(self._next("date"), "date")
        day, _, rest = text.partition("-")
        month, _, year = rest.partition("-")
        try:
            if not (day.isdigit() and len(day) <= 2 and year.isdigit() and len(year) == 4):
                raise ValueError(text)
            return datetime.date(int(year), _MONTHS[month.upper()], int(day))
        except (KeyError, ValueError) as error:
            raise SearchError(f"Invalid date in SEARCH: {text[:30]!r} (write 1-Feb-1994)") from error

    def _set(self, text: str) -> SequenceSet:
        try:
            found = SequenceSet.parse(text)
        except SequenceError as error:
            raise SearchError(str(error)) from error
        self.uses_star = self.uses_star or found.uses_star
        return found

    def key(self, depth: int) -> _Test:
        if depth > MAX_DEPTH:
            raise SearchError("Search keys nested too deep")
        self.keys += 1
        if self.keys > MAX_KEYS:
            raise SearchError(f"SEARCH takes at most {MAX_KEYS} keys")
        argument = self._next("search key")
        if isinstance(argument, tuple):
            if not argument:
                raise SearchError("Empty parentheses in SEARCH")
            inner = _Reader(argument, 0, utf8=self.utf8)
            inner.keys, inner.text_keys = self.keys, self.text_keys
            tests = []
            while inner.position < len(argument):
                tests.append(inner.key(depth + 1))
            self.keys, self.text_keys = inner.keys, inner.text_keys
            self._need(inner.needs)
            self.uses_modseq = self.uses_modseq or inner.uses_modseq
            self.uses_star = self.uses_star or inner.uses_star
            return _all(tests)
        if not isinstance(argument, Atom):
            raise SearchError("Expected a search key")
        name = argument.text.upper()
        if name[:1].isdigit() or name[:1] == "*":
            members = self._set(argument.text)
            return lambda subject, folder: members.contains(subject.seq, folder.messages or 0)
        return self._named(name, depth)

    def _named(self, name: str, depth: int) -> _Test:
        if name == "ALL":
            return lambda subject, folder: True
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return lambda subject, folder: (flag in subject.flags) == present
        if name == "NEW":
            return lambda subject, folder: "\\Recent" in subject.flags and "\\Seen" not in subject.flags
        if name in ("KEYWORD", "UNKEYWORD"):
            keyword = _text(self._next("keyword"), "keyword").casefold()
            present = name == "KEYWORD"
            return lambda subject, folder: any(f.casefold() == keyword for f in subject.flags) == present
        if name in ("LARGER", "SMALLER"):
            size = self._number()
            if name == "LARGER":
                return lambda subject, folder: subject.size > size
            return lambda subject, folder: subject.size < size
        if name in ("BEFORE", "ON", "SINCE"):
            return _by_date(name, self._date(), _internal_day)
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            self._need("header")
            return _by_date(name[4:], self._date(), _sent_day)
        if name in _ADDRESS_KEYS:
            self._need("header")
            return _header_contains(_ADDRESS_KEYS[name], self._string())
        if name == "HEADER":
            self._need("header")
            field = _text(self._next("header name"), "header name")
            return _header_contains(field, self._string())
        if name == "BODY":
            self._need("full")
            needle = self._string()
            return lambda subject, folder: needle in subject.view().body_text(folded=True)
        if name == "TEXT":
            self._need("full")
            needle = self._string()
            return lambda subject, folder: (
                needle in subject.view().header_text(folded=True)
                or needle in subject.view().body_text(folded=True)
            )
        if name == "UID":
            members = self._set(_text(self._next("UID set"), "UID set"))
            return lambda subject, folder: members.contains(subject.uid, folder.highest_uid or 0)
        if name == "NOT":
            inner = self.key(depth + 1)
            return lambda subject, folder: not inner(subject, folder)
        if name == "OR":
            left = self.key(depth + 1)
            right = self.key(depth + 1)
            return lambda subject, folder: left(subject, folder) or right(subject, folder)
        if name == "MODSEQ":
            self.uses_modseq = True
            if self.position < len(self.arguments) and isinstance(self.arguments[self.position], String):
                self._next("entry name")
                kind = _text(self._next("entry type"), "entry type").lower()
                if kind not in ("all", "shared", "priv"):
                    raise SearchError("MODSEQ entry type must be all, shared or priv")
            least = self._number(MAX_MODSEQ)
            return lambda subject, folder: subject.modseq >= least
        if name == "CHARSET":
            raise SearchError("CHARSET must come first in SEARCH")
        raise SearchError(f"Unknown search key {name[:40]!r}")


def _internal_day(subject: SearchSubject) -> datetime.date | None:
    return datetime.datetime.fromtimestamp(subject.internal_date, datetime.UTC).date()


def _sent_day(subject: SearchSubject) -> datetime.date | None:
    """The day of the Date: header in its own zone (RFC 3501: "disregarding time and timezone")."""
    values = subject.view().header_value("date")
    if not values:
        return None
    try:
        parsed = email.utils.parsedate_tz(values[0])
        return datetime.date(parsed[0], parsed[1], parsed[2]) if parsed else None
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _by_date(
    relation: str, day: datetime.date, day_of: Callable[[SearchSubject], datetime.date | None]
) -> _Test:
    def test(subject: SearchSubject, folder: _Folder) -> bool:
        found = day_of(subject)
        if found is None:
            return False
        if relation == "BEFORE":
            return found < day
        if relation == "ON":
            return found == day
        return found >= day

    return test


def _header_contains(field: str, needle: str) -> _Test:
    def test(subject: SearchSubject, folder: _Folder) -> bool:
        values = subject.view().header_value(field)
        return any(needle in value.casefold() for value in values)

    return test
