"""The built-in spam engine, the embedded default: facts become tags, tags one score, the score a verdict.

`BuiltinSpamEngine.check` reads what the node already knows (authentication, the connection filter's
facts, the parsed message) and what users reported (`learned.LearnedStore`), and tags it; every tag
has a fixed score (`SCORES`), some also count as phishing evidence (`PHISHING`). The sum is the score;
`Thresholds` (spam 5, reject 12) give it an action as Rspamd's would, and `engine.to_verdict` maps that
to SCL, category and BCL like it does Rspamd's (see `engine`). The tags:

- GTUBE: the standard test string anywhere in the message: SCL 9, high-confidence spam.
- Authentication (inbound, when `facts.auth` is set): SPF fail / softfail, DKIM fail with no DKIM
  pass, DMARC fail (more when the domain asks quarantine or reject: a spoof of a protected domain is
  phishing evidence), DMARC pass lowers the score. A composite pass (a trusted ARC seal) cancels them.
- Connection (inbound, not for an authenticated submitter): a DNS blocklist or block list hit, no
  verified reverse name, a HELO that is a bare IP address, not a fully qualified name, or one of this
  service's own names (`hostnames`).
- Headers: no From, no Date, no Message-ID; a From display name that holds an address of another
  domain; a subject in capitals, with spam words or an amount of money; no To or Cc, or
  "undisclosed recipients"; an Outlook X-Mailer with a Message-ID Outlook never makes; "Re:" without
  In-Reply-To or References; a freemail Reply-To other than the From.
- Content: HTML only with little text (more with an image: image spam); many links with little
  text; a link to a bare IP address; a URL shortener; a link whose visible text is a URL of another
  organization (phishing evidence); credential lures ("verify your account", "your mailbox will be
  suspended"...) with a link (phishing evidence); spam phrases; advance-fee fraud; extortion with a
  bitcoin address.
- Learned: a near duplicate of a message reported as junk (+10) or as not junk (-6).

Bulk is not scored here: `bulk.bulk_level` gives the BCL, with the complaints users made about the
sender (junk reports on bulk mail).

Guarantees: `check` never raises (on any input, parsed within the MIME limits) and does no I/O but
one stat of the store file per second; the text it reads is bounded (`MAX_SCAN_CHARS`, `MAX_HTML`).
`learn` raises `EngineUnavailable` only when the store file cannot be written.

Security: every header and body it reads is a stranger's; regular expressions here are linear (no
nested quantifiers) and run on bounded text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from postroom.dns.organizational import same_organization
from postroom.model.verdicts import (
    CompAuthResult,
    Direction,
    DkimResult,
    DmarcPolicy,
    DmarcResult,
    EngineUnavailable,
    IpListing,
    MessageFacts,
    SpamVerdict,
    SpfResult,
)
from postroom.protection.mime import ParsedMessage, parse_message
from postroom.protection.spam.bulk import BULK_POINTS, bulk_level, from_domain
from postroom.protection.spam.engine import GTUBE, Thresholds, to_verdict
from postroom.protection.spam.learned import LearnedStore, fingerprint

__all__ = ["PHISHING", "SCORES", "THRESHOLDS", "BuiltinSpamEngine"]

NAME = "builtin"
THRESHOLDS = Thresholds(spam=5.0, reject=12.0, phish=4.5, high_phish=7.0)
MAX_SCAN_CHARS = 50_000  # of the text the phrase rules read
MAX_HTML = 200_000  # octets of HTML the link rules read
MANY_URLS = 10
MAX_ANCHORS = 500  # links of one message the link rules read
MAX_TAG = 2_000  # characters of one anchor tag, and of its text, they read

SCORES: dict[str, float] = {
    "GTUBE": 100.0,
    # authentication
    "SPF_FAIL": 2.0,
    "SPF_SOFTFAIL": 1.0,
    "DKIM_FAIL": 1.5,
    "DMARC_FAIL": 1.5,  # p=none
    "DMARC_QUARANTINE": 2.5,
    "DMARC_REJECT": 3.5,
    "DMARC_PASS": -1.0,
    # connection
    "IP_LISTED": 4.0,
    "RDNS_NONE": 1.0,
    "HELO_BARE_IP": 1.5,
    "HELO_NOT_FQDN": 1.0,
    "HELO_OURS": 3.0,
    # headers
    "FROM_MISSING": 2.0,
    "DATE_MISSING": 1.0,
    "MID_MISSING": 1.0,
    "FROM_NAME_HAS_ADDRESS": 2.0,
    "SUBJECT_ALL_CAPS": 1.5,
    "SUBJECT_SPAM_WORDS": 1.0,  # per word, up to two
    "SUBJECT_MONEY": 0.5,
    "TO_MISSING": 1.0,
    "TO_UNDISCLOSED": 1.0,
    "FORGED_OUTLOOK_MID": 2.0,
    "FAKE_REPLY": 1.0,
    "REPLYTO_FREEMAIL": 1.0,
    # content
    "HTML_ONLY_SHORT": 1.5,
    "HTML_IMAGE_ONLY": 1.5,
    "MANY_URLS_LITTLE_TEXT": 1.0,
    "URL_BARE_IP": 2.5,
    "URL_SHORTENER": 1.0,
    "LINK_TEXT_MISMATCH": 3.0,
    "PHISH_LURE": 2.0,  # per lure, up to two
    "SPAM_PHRASES": 1.0,  # per phrase, up to four
    "ADVANCE_FEE": 1.5,  # per sign, up to three
    "EXTORTION": 4.0,
    "BITCOIN_ADDRESS": 1.0,
    # reports
    "LEARNED_SPAM": 10.0,
    "LEARNED_HAM": -6.0,
}
# The tags whose scores are phishing evidence (`engine.to_verdict`'s phishing score).
PHISHING = frozenset(
    (
        "DMARC_QUARANTINE",
        "DMARC_REJECT",
        "FROM_NAME_HAS_ADDRESS",
        "URL_BARE_IP",
        "LINK_TEXT_MISMATCH",
        "PHISH_LURE",
    )
)

# Where a link hides its destination, and mailboxes anyone can open (for Reply-To).
_SHORTENER_NAMES = """bit.ly tinyurl.com goo.gl t.co ow.ly is.gd buff.ly rebrand.ly cutt.ly shorturl.at
tiny.cc rb.gy s.id t.ly bl.ink short.io v.gd lnkd.in"""
_FREEMAIL_NAMES = """gmail.com googlemail.com yahoo.com hotmail.com outlook.com live.com aol.com mail.ru
yandex.ru yandex.com gmx.com gmx.de gmx.net web.de protonmail.com proton.me icloud.com zoho.com mail.com
qq.com 163.com"""
_SHORTENERS = frozenset(_SHORTENER_NAMES.split())
_FREEMAIL = frozenset(_FREEMAIL_NAMES.split())
_ADDRESS = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
_URL = re.compile(r"https?://([^/\s<>\"'):?#\]]+)[^\s<>\"')\]]*")  # on lower-case text
_HREF = re.compile(r"\bhref\s*=\s*[\"']?([^\"'\s>]+)")
_TAG = re.compile(r"<[^<>]*>")
_SHOWN_URL = re.compile(r"^\s*(?:https?://|www\.)([a-z0-9-]+(?:\.[a-z0-9-]+)+)")
_REPLY = re.compile(r"\s*(?:re|aw|sv|antw)\s*:", re.IGNORECASE)
_OUTLOOK_MID = re.compile(
    r"^<?[0-9a-f]{12}\$[0-9a-f]{8}\$[0-9a-f]{8}\$?@|@[\w.-]*(?:outlook\.com|exchangelabs\.com|"
    r"\.prod\.outlook\.com|\.prd\d+\.)",
    re.IGNORECASE,
)
_SUBJECT_WORDS = re.compile(  # on the lower-case subject
    r"\b(?:free|winner|won|viagra|cialis|casino|lottery|prize|cash|urgent|guaranteed|congratulations|"
    r"bitcoin|crypto|investment|earn|million|loan|credit|debt|miracle|cheap|rich|bonus|act now)\b"
    r"|\$\$\$|100\s?%"
)
_MONEY = re.compile(r"[$€£]\s?\d|\d\s?(?:[$€£]|usd|eur|gbp)\b")


@dataclass(frozen=True, slots=True)
class _Phrase:
    """A pattern over lower-case text, tried only when the text holds one of its `keys` (a substring
    search costs a microsecond where a regular expression costs a scan)."""

    keys: tuple[str, ...]
    pattern: re.Pattern[str]


def _phrases(*rules: tuple[str, str]) -> tuple[_Phrase, ...]:
    """Rules as ("key|key", pattern): the keys are literal substrings, the pattern a regex."""
    return tuple(_Phrase(tuple(keys.split("|")), re.compile(pattern)) for keys, pattern in rules)


def _count(phrases: tuple[_Phrase, ...], text: str) -> int:
    """How many of `phrases` occur in `text` (lower case)."""
    return sum(1 for p in phrases if any(k in text for k in p.keys) and p.pattern.search(text))


_LURES = _phrases(
    ("verify your", r"verify your (?:account|identity|information|mailbox|e-?mail account|login)"),
    ("confirm your", r"confirm your (?:account|identity|password|billing|payment|login)"),
    (
        "suspended|locked|limited|disabled|deactivated|closed|restricted|blocked",
        r"(?:account|mailbox|access) (?:has been|will be|is|was) (?:temporarily )?(?:suspended|locked|"
        r"limited|disabled|deactivated|closed|restricted|blocked)",
    ),
    ("unusual", r"unusual (?:sign[- ]?in |login )?activity"),
    ("update your", r"update your (?:payment|billing|account|bank) (?:details|information|info)"),
    ("password", r"your password (?:will )?expires?"),
    ("mailbox", r"mailbox (?:is )?(?:full|almost full|over (?:its|the|your) (?:quota|storage))"),
    ("activate your", r"re-?activate your (?:account|mailbox)"),
    ("validate your", r"validate your (?:account|mailbox|e-?mail)"),
    ("attempt", r"(?:failed|unsuccessful) (?:delivery|payment) attempt"),
)
_SPAM_PHRASES = _phrases(
    ("viagra|cialis|levitra", r"viagra|cialis|levitra"),
    ("casino", r"online casino|casino bonus"),
    ("lottery|jackpot", r"lottery|jackpot"),
    ("won", r"you (?:have )?won\b"),
    ("claim your", r"claim your (?:prize|reward|winnings|bonus)"),
    ("100%", r"100% (?:free|guaranteed|satisfaction)"),
    ("risk", r"risk[- ]free"),
    ("act now", r"\bact now"),
    ("prescription", r"no prescription"),
    ("weight loss", r"weight loss"),
    ("work from home", r"work from home"),
    ("earn", r"earn \$?\d[\d,]* (?:per|a|every) (?:day|week|hour)"),
    ("make money", r"make money fast"),
    ("double", r"double (?:your|their) (?:money|income|bitcoin|investment)"),
    ("crypto", r"crypto(?:currency)? (?:investment|opportunity|trading platform)"),
    ("guaranteed", r"guaranteed (?:returns|profits?|income)"),
    ("singles|girls|women", r"(?:hot|lonely|local) (?:singles|girls|women)"),
    ("google", r"first page of google"),
    ("seo", r"\bseo (?:services|packages|experts?)"),
    ("replica|cheap", r"replica watches|cheap (?:meds|pills|rolex)"),
    ("dear", r"\bdear (?:friend|beneficiary|winner|sir/madam)"),
    ("not spam", r"this is not spam"),
    ("to claim", r"click (?:here|below) to claim"),
)
_ADVANCE_FEE = _phrases(
    ("next of kin", r"next of kin"),
    ("dollars|usd|euro|pounds", r"\d+(?:[.,]\d+)? ?(?:million|m) (?:us )?(?:dollars|usd|euros?|pounds)"),
    ("beneficiary", r"beneficiary"),
    ("inheritance|deceased", r"inheritance|deceased client"),
    ("barrister|attorney", r"barrister|attorney at law"),
    ("transfer", r"transfer (?:of )?(?:the|this) (?:funds|sum)"),
    ("confidential", r"strictly confidential"),
    ("western union|moneygram", r"western union|moneygram"),
    ("proposal", r"(?:business|investment) proposal"),
)
_EXTORTION = _phrases(
    ("recorded you|webcam|hacked your|video", r"recorded you|webcam|hacked your (?:device|computer|phone)"),
    ("video", r"your (?:intimate|private) video"),
)
_CRYPTO_WORDS = ("bitcoin", "btc", "wallet")
_BITCOIN = re.compile(r"\b(?:bc1[ac-hj-np-z02-9]{25,62}|[13][a-km-zA-HJ-NP-Z1-9]{25,34})\b")


class BuiltinSpamEngine:
    """The built-in scorer; see the module docstring."""

    name = NAME

    def __init__(
        self,
        *,
        hostnames: Iterable[str] = (),
        store: LearnedStore | None = None,
        thresholds: Thresholds = THRESHOLDS,
    ) -> None:
        self.hostnames = frozenset(name.lower().rstrip(".") for name in hostnames if name)
        self.store = store if store is not None else LearnedStore()
        self.thresholds = thresholds

    async def check(self, message: bytes, parsed: ParsedMessage, facts: MessageFacts) -> SpamVerdict:
        return self.score(message, parsed, facts)

    def score(self, message: bytes, parsed: ParsedMessage, facts: MessageFacts) -> SpamVerdict:
        """`check` without the coroutine: the whole work, synchronous."""
        tags: dict[str, float] = {}
        gtube = GTUBE in message
        if gtube:
            tags["GTUBE"] = SCORES["GTUBE"]
        inbound = facts.direction is Direction.INBOUND and not facts.authenticated_user
        if inbound:
            self._authentication(facts, tags)
            self._connection(facts, tags)
        fields: dict[str, str] = {}
        for name, value in parsed.headers:
            fields.setdefault(name.lower(), value)
        self._headers(parsed, fields, tags)
        self._content(parsed, tags)
        self.store.refresh()
        if len(self.store):
            match = self.store.match(fingerprint(parsed))
            if match is not None:
                tag = "LEARNED_SPAM" if match.spam else "LEARNED_HAM"
                tags[tag] = SCORES[tag]
        score = sum(tags.values())
        thresholds = self.thresholds
        bulk = bulk_level(parsed, facts, spammy=score >= thresholds.spam / 2)
        if bulk.level and bulk.sender:
            complaints = self.store.complaints(bulk.sender)
            if complaints:
                bulk = bulk_level(parsed, facts, spammy=score >= thresholds.spam / 2, complaints=complaints)
        return to_verdict(
            engine=NAME,
            action=thresholds.action(score),
            score=score,
            thresholds=thresholds,
            bcl=bulk.level,
            symbols=tags.items(),
            phish_score=sum(value for tag, value in tags.items() if tag in PHISHING and value > 0),
            gtube=gtube,
        )

    async def learn(self, message: bytes, *, spam: bool) -> None:
        parsed = parse_message(message)
        bulk = bulk_level(parsed, MessageFacts("", "", "", ()))
        sender = bulk.sender if bulk.points >= BULK_POINTS else ""
        try:
            if self.store.path is None:
                self.store.learn(parsed, spam=spam, sender=sender)
            else:
                await asyncio.to_thread(self.store.learn, parsed, spam=spam, sender=sender)
        except OSError as error:
            raise EngineUnavailable(NAME, f"cannot keep the report in {self.store.path}: {error}") from None

    async def aclose(self) -> None:
        """Nothing to release: the store's file is written whole at each report."""

    # -- facts to tags

    @staticmethod
    def _authentication(facts: MessageFacts, tags: dict[str, float]) -> None:
        auth = facts.auth
        if auth is None or auth.compauth in (CompAuthResult.PASS, CompAuthResult.SOFTPASS):
            if auth is not None and auth.dmarc.result is DmarcResult.PASS:
                tags["DMARC_PASS"] = SCORES["DMARC_PASS"]
            return
        if auth.spf.result is SpfResult.FAIL:
            tags["SPF_FAIL"] = SCORES["SPF_FAIL"]
        elif auth.spf.result is SpfResult.SOFTFAIL:
            tags["SPF_SOFTFAIL"] = SCORES["SPF_SOFTFAIL"]
        results = {d.result for d in auth.dkim}
        if DkimResult.FAIL in results and DkimResult.PASS not in results:
            tags["DKIM_FAIL"] = SCORES["DKIM_FAIL"]
        if auth.dmarc.result is DmarcResult.FAIL:
            tag = {
                DmarcPolicy.REJECT: "DMARC_REJECT",
                DmarcPolicy.QUARANTINE: "DMARC_QUARANTINE",
            }.get(auth.dmarc.policy, "DMARC_FAIL")
            tags[tag] = SCORES[tag]

    def _connection(self, facts: MessageFacts, tags: dict[str, float]) -> None:
        if facts.connection.listing is IpListing.BLOCKED:
            tags["IP_LISTED"] = SCORES["IP_LISTED"]
        if not facts.ptr:
            tags["RDNS_NONE"] = SCORES["RDNS_NONE"]
        helo = facts.helo.strip().lower().rstrip(".")
        if _is_address(helo.strip("[]").removeprefix("ipv6:")):
            tags["HELO_BARE_IP"] = SCORES["HELO_BARE_IP"]
        elif "." not in helo:
            tags["HELO_NOT_FQDN"] = SCORES["HELO_NOT_FQDN"]
        elif helo in self.hostnames:
            tags["HELO_OURS"] = SCORES["HELO_OURS"]

    @staticmethod
    def _headers(parsed: ParsedMessage, fields: dict[str, str], tags: dict[str, float]) -> None:
        sender = fields.get("from")
        if sender is None:
            tags["FROM_MISSING"] = SCORES["FROM_MISSING"]
        else:
            domain = from_domain(parsed)
            shown = sender.rpartition("<")[0] if "<" in sender else ""
            named = _ADDRESS.search(shown[:MAX_TAG])
            if named and domain and not same_organization(named.group(1).lower(), domain):
                tags["FROM_NAME_HAS_ADDRESS"] = SCORES["FROM_NAME_HAS_ADDRESS"]
            reply_to = _ADDRESS.search(fields.get("reply-to", "")[:MAX_TAG])
            if reply_to and reply_to.group(1).lower() in _FREEMAIL and reply_to.group(1).lower() != domain:
                tags["REPLYTO_FREEMAIL"] = SCORES["REPLYTO_FREEMAIL"]
        if "date" not in fields:
            tags["DATE_MISSING"] = SCORES["DATE_MISSING"]
        message_id = fields.get("message-id")
        if message_id is None:
            tags["MID_MISSING"] = SCORES["MID_MISSING"]
        elif "microsoft outlook" in fields.get("x-mailer", "").lower() and not _OUTLOOK_MID.search(
            message_id.strip()
        ):
            tags["FORGED_OUTLOOK_MID"] = SCORES["FORGED_OUTLOOK_MID"]
        subject = fields.get("subject", "")[:MAX_TAG]
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 8 and len(subject.split()) >= 2 and all(c.isupper() for c in letters):
            tags["SUBJECT_ALL_CAPS"] = SCORES["SUBJECT_ALL_CAPS"]
        lower = subject.lower()
        words = {m.group(0) for m in _SUBJECT_WORDS.finditer(lower)}
        if words:
            tags["SUBJECT_SPAM_WORDS"] = SCORES["SUBJECT_SPAM_WORDS"] * min(2, len(words))
        if _MONEY.search(lower):
            tags["SUBJECT_MONEY"] = SCORES["SUBJECT_MONEY"]
        if _REPLY.match(subject) and "in-reply-to" not in fields and "references" not in fields:
            tags["FAKE_REPLY"] = SCORES["FAKE_REPLY"]
        to = fields.get("to")
        if to is None and "cc" not in fields:
            tags["TO_MISSING"] = SCORES["TO_MISSING"]
        elif to is not None and "undisclosed" in to.lower():
            tags["TO_UNDISCLOSED"] = SCORES["TO_UNDISCLOSED"]

    @staticmethod
    def _content(parsed: ParsedMessage, tags: dict[str, float]) -> None:
        html = [p for p in parsed.parts if p.content_type == "text/html" and p.disposition != "attachment"]
        plain = any(p.content_type == "text/plain" and p.disposition != "attachment" for p in parsed.parts)
        original = parsed.text[:MAX_SCAN_CHARS]
        text = original.lower()
        words = len(text.split())
        markup = "".join(p.payload[:MAX_HTML].decode("utf-8", "replace") for p in html)[:MAX_HTML].lower()
        if html and not plain and words < 40:
            tags["HTML_ONLY_SHORT"] = SCORES["HTML_ONLY_SHORT"]
            if "<img" in markup or any(p.content_type.startswith("image/") for p in parsed.parts):
                tags["HTML_IMAGE_ONLY"] = SCORES["HTML_IMAGE_ONLY"]
        hosts = [m.group(1).rstrip(".") for m in _URL.finditer(text)] if "http" in text else []
        if "http" in markup:
            hosts += [m.group(1).rstrip(".") for m in _URL.finditer(markup)]
        if len(hosts) >= MANY_URLS and words < 5 * len(hosts):
            tags["MANY_URLS_LITTLE_TEXT"] = SCORES["MANY_URLS_LITTLE_TEXT"]
        if any(_is_address(host.strip("[]")) for host in hosts if host[:1].isdigit() or ":" in host):
            tags["URL_BARE_IP"] = SCORES["URL_BARE_IP"]
        if any(host.removeprefix("www.") in _SHORTENERS for host in hosts):
            tags["URL_SHORTENER"] = SCORES["URL_SHORTENER"]
        if "<a" in markup and _mismatched_link(markup):
            tags["LINK_TEXT_MISMATCH"] = SCORES["LINK_TEXT_MISMATCH"]
        lures = _count(_LURES, text) if hosts else 0
        if lures:
            tags["PHISH_LURE"] = SCORES["PHISH_LURE"] * min(2, lures)
        phrases = _count(_SPAM_PHRASES, text)
        if phrases:
            tags["SPAM_PHRASES"] = SCORES["SPAM_PHRASES"] * min(4, phrases)
        signs = _count(_ADVANCE_FEE, text)
        if signs >= 2:
            tags["ADVANCE_FEE"] = SCORES["ADVANCE_FEE"] * min(3, signs)
        if any(word in text for word in _CRYPTO_WORDS) and _BITCOIN.search(original):
            if _count(_EXTORTION, text):
                tags["EXTORTION"] = SCORES["EXTORTION"]
            else:
                tags["BITCOIN_ADDRESS"] = SCORES["BITCOIN_ADDRESS"]


def _mismatched_link(markup: str) -> bool:
    """Whether an anchor shows a URL of one organization and goes to another's."""
    return any(not same_organization(shown, target) for target, shown in _links(markup) if shown and target)


def _links(markup: str) -> Iterator[tuple[str, str]]:
    """(target host, host shown as the text) of the first `MAX_ANCHORS` anchors of lower-case
    `markup`, "" when none.

    A scan with str.find that never goes back: linear in the markup whatever its shape (a regular
    expression over `<a ...>...</a>` backtracks on unclosed tags)."""
    position = 0
    for _ in range(MAX_ANCHORS):
        start = markup.find("<a", position)
        end = markup.find(">", start) if start >= 0 else -1
        close = markup.find("</a", end) if end >= 0 else -1
        if close < 0:
            return
        position = close
        href = _HREF.search(markup, start, min(end, start + MAX_TAG))
        target = _URL.match(href.group(1)) if href else None
        shown = _SHOWN_URL.match(_TAG.sub("", markup[end + 1 : min(close, end + 1 + MAX_TAG)]).strip())
        yield (target.group(1).rstrip(".") if target else "", shown.group(1).rstrip(".") if shown else "")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
