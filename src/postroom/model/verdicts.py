"""The typed verdicts of protection: what each check concludes about a message, and the actions.

Every check of the filtering stack (`../shared/spec` §10) takes facts and returns one of these frozen
values; nothing here does I/O. `pipeline` merges them into one decision per recipient by the spec's
verdict precedence (`FilterVerdict`, most severe first), and each verdict is written to message trace
as a `Filter` event (`as_detail`).

Exception tree of the engines (`EngineUnavailable`): an engine that is down, refuses, answers
garbage or times out raises it; the pipeline then defers the message (451 4.7.x) or, by policy,
delivers it with a header saying it was not scanned. Nothing else an engine raises is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class EngineUnavailable(Exception):
    """A malware or spam engine could not give a verdict (down, timed out, refused, garbled answer)."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(f"{engine}: {reason}")
        self.engine = engine
        self.reason = reason


# --- authentication ---------------------------------------------------------------------------------
class SpfResult(StrEnum):
    """RFC 7208 §2.6 results."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    result: SpfResult
    domain: str  # the domain checked: MAIL FROM's, or HELO's for the null sender
    identity: str  # "mailfrom" or "helo" (RFC 8601 ptype smtp.mailfrom / smtp.helo)
    client_ip: str
    mechanism: str = ""  # the term that matched, e.g. "ip4:192.0.2.0/24", "-all", "default"
    explanation: str = ""  # the exp= text of a fail, or the reason of an error


class DkimResult(StrEnum):
    """RFC 8601 §2.7.1 dkim results."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    POLICY = "policy"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """One DKIM-Signature's result (a message has one per signature, or a single NONE)."""

    result: DkimResult
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=, e.g. rsa-sha256, ed25519-sha256
    reason: str = ""  # e.g. "body hash did not verify", "no key for signature"


class DmarcResult(StrEnum):
    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    BESTGUESSPASS = "bestguesspass"  # no record, but SPF or DKIM aligned with the From domain
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DmarcPolicy(StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class DmarcAction(StrEnum):
    """What became of a DMARC failure (spec §1.7, §10.7 `action=`)."""

    NONE = "none"  # passed, or p=none
    OREJECT = "oreject"  # p=reject not honoured: marked spoof (the Exchange default)
    PCT_QUARANTINE = "pct.quarantine"  # p=quarantine skipped by pct sampling
    PCT_REJECT = "pct.reject"  # p=reject skipped by pct sampling
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    result: DmarcResult
    from_domain: str  # RFC5322.From's domain ("" when the message has none usable)
    policy: DmarcPolicy = DmarcPolicy.NONE  # the policy that applies (p, or sp for a subdomain)
    action: DmarcAction = DmarcAction.NONE
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


class ArcResult(StrEnum):
    NONE = "none"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    result: ArcResult
    instances: int = 0  # the highest i= of the chain
    sealers: tuple[str, ...] = ()  # d= of each ARC-Seal, instance 1 first
    # The Authentication-Results the trusted sealer nearest to us recorded (ARC-Authentication-Results),
    # when the chain passed: what the pipeline honours when SPF/DKIM broke in transit.
    recorded: str = ""
    # Whether an SPF or DKIM pass in `recorded` aligns with the From domain (under its DMARC record's
    # adkim/aspf): what a tenant that trusts the newest sealer honours when ours broke in transit.
    recorded_aligned: bool = False
    reason: str = ""


class CompAuthResult(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SOFTPASS = "softpass"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """Authentication of one inbound message: the facts and the composite verdict (spec §10.7)."""

    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict
    arc: ArcVerdict
    compauth: CompAuthResult
    compauth_reason: int  # 000 explicit fail, 001 implicit fail, 1xx/7xx pass, 2xx softpass, 6xx intra-org
    header: str  # the whole `Authentication-Results: ...` header field, CRLF-terminated
    arc_trusted: bool = False  # the chain passed and its sealer is on the tenant's trusted list


# --- connection filter --------------------------------------------------------------------------------
class IpListing(StrEnum):
    """`IPV` of the antispam report."""

    NOT_LISTED = "NLI"
    ALLOWED = "CAL"  # on an IP Allow list: spam filtering is skipped
    BLOCKED = "BLK"  # on an IP Block list (or a DNS blocklist): the connection or RCPT was refused


@dataclass(frozen=True, slots=True)
class ConnectionVerdict:
    listing: IpListing = IpListing.NOT_LISTED
    list_name: str = ""  # which list: "service", "tenant:<tenant id>", "dnsbl:<zone>"
    entry: str = ""  # the entry that matched (CIDR, range, or the blocklist's answer)


# --- anti-malware ---------------------------------------------------------------------------------
class MalwareResult(StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"  # an engine found a signature
    BLOCKED_FILE_TYPE = "blocked-file-type"  # the common attachment filter (spec §10.3)
    UNSCANNED = "unscanned"  # the engine was unavailable and the policy delivers anyway


@dataclass(frozen=True, slots=True)
class MalwareVerdict:
    result: MalwareResult
    engine: str = ""  # "clamd", "builtin", "attachment-filter"
    names: tuple[str, ...] = ()  # signature names, or the blocked file types ("exe", "zip>exe")
    files: tuple[str, ...] = ()  # the attachment names that carried them
    reason: str = ""


# --- anti-spam -----------------------------------------------------------------------------------
class SpamCategory(StrEnum):
    """`CAT` of the antispam report (spec §10.7)."""

    NONE = "NONE"
    BULK = "BULK"
    SPAM = "SPM"
    HIGH_CONFIDENCE_SPAM = "HSPM"
    PHISH = "PHSH"
    HIGH_CONFIDENCE_PHISH = "HPHSH"
    SPOOF = "SPOOF"
    MALWARE = "MALW"
    OUTBOUND_SPAM = "OSPM"


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """An engine's content verdict, mapped to the spec's scales (§10.4)."""

    scl: int  # -1 skipped, 0-1 clean, 5-6 spam, 8-9 high-confidence spam (2-4 and 7 unused)
    bcl: int  # 0 not bulk, 1-9 bulk complaint level
    category: SpamCategory  # NONE, SPAM, HIGH_CONFIDENCE_SPAM, PHISH, HIGH_CONFIDENCE_PHISH (BULK by policy)
    engine: str  # "rspamd", "builtin"
    score: float = 0.0  # the engine's own score
    symbols: tuple[str, ...] = ()  # what fired (rule names), for trace and the report header
    reason: str = ""


# --- the merged decision ------------------------------------------------------------------------------
class FilterVerdict(IntEnum):
    """The verdicts in the spec's precedence (§10.1): a lower value wins."""

    MALWARE = 1
    HIGH_CONFIDENCE_PHISH = 2
    PHISH = 3
    HIGH_CONFIDENCE_SPAM = 4
    SPOOF = 5
    SPAM = 6
    BULK = 7
    CLEAN = 9


class FilterAction(StrEnum):
    """What a policy does with a verdict (spec §10.4 actions table)."""

    INBOX = "inbox"  # no action: deliver to the Inbox (Bulk only, or clean mail)
    JUNK = "junk"  # move to the Junk folder
    QUARANTINE = "quarantine"
    X_HEADER = "x-header"  # add the policy's header (still to Junk for Spam and HCS, as the spec says)
    PREPEND_SUBJECT = "prepend-subject"
    REDIRECT = "redirect"
    DELETE = "delete"
    REJECT = "reject"  # refuse (at DATA when every recipient refuses; else a failed route and an NDR)


class Direction(StrEnum):
    """`DIR` of the antispam report."""

    INBOUND = "INB"
    OUTBOUND = "OUT"
    INTRA_ORG = "INT"


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the checks know about a message besides its bytes."""

    client_ip: str
    helo: str
    mail_from: str  # "" for the null sender
    recipients: tuple[str, ...]
    direction: Direction = Direction.INBOUND
    ptr: str = ""  # the client's verified reverse name, "" when none
    authenticated_user: str = ""  # submission: the login; "" on the MX endpoint
    tls: bool = False
    tenant_ids: tuple[int, ...] = ()
    auth: AuthVerdict | None = None  # set for the spam engines: authentication ran first
    connection: ConnectionVerdict = field(default_factory=ConnectionVerdict)
