"""The filtering stack in order, and the one place its verdicts become an action per recipient.

`Protection.inspect` runs on a whole message at the end of DATA, in the spec's order (§10.1):
foreign `Authentication-Results` and internal headers are removed first (RFC 8601 §5), then
authentication (SPF, DKIM, DMARC, ARC), anti-malware (the engine, then the common attachment
filter of the recipient's policy), anti-spam (the engine's SCL and BCL). The connection filter ran
earlier (at connect and RCPT); its verdict arrives in the facts. `decide` then merges the verdicts for
each recipient by the spec's precedence (malware, high-confidence phish, phish, high-confidence spam,
spoof, spam, bulk) under the recipient's policies (the tenant's anti-spam and anti-malware policy
that matches the recipient, the mailbox's safe and blocked senders, the tenant's trusted ARC sealers)
and renders the recipient's protection headers: `Authentication-Results`, the antispam report and
the BCL (`protection.headers`). A message internal to a recipient's tenant (over its OnPremises
connector that treats messages as internal, `internal`) skips anti-spam for that tenant's copies
(`SFV:SKI`, `DIR:INT`); malware is scanned all the same.

Failure behaviour: an engine that cannot give a verdict (`EngineUnavailable`) never lets mail through
silently: by `[protection] engine_unavailable` the whole message is deferred (451 4.7.0, the client
retries; nothing was acknowledged) or delivered with a `X-Postroom-Malware-Scan` / `SFV:UNS` stamp
saying it was not scanned. A message the MIME walk could not read is still scanned by the engines and
delivered by its verdicts; its parse problems are traced. Nothing here writes anything: the caller
applies the `Inspection` in its commit.

Security: every input is a stranger's message. Header values written into our headers are reduced to
printable ASCII without `;` and bounded, so a HELO or a From domain cannot forge report fields.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from postroom.model import Reply
from postroom.model.policy import (
    ADMIN_ONLY,
    FULL_ACCESS,
    AntiMalwarePolicy,
    AntiSpamPolicy,
    MailboxSenderLists,
    TenantProtection,
)
from postroom.model.verdicts import (
    AuthVerdict,
    CompAuthResult,
    ConnectionVerdict,
    Direction,
    DmarcAction,
    DmarcPolicy,
    DmarcResult,
    EngineUnavailable,
    FilterAction,
    FilterVerdict,
    IpListing,
    MalwareResult,
    MalwareVerdict,
    MessageFacts,
    SpamCategory,
    SpamVerdict,
    SpfVerdict,
)
from postroom.protection import headers
from postroom.protection.malware import MalwareEngine
from postroom.protection.mime import MimeLimits, ParsedMessage, parse_message
from postroom.protection.spam import SpamEngine

# Replies of the filtering stack (spec §10, §12).
ENGINE_UNAVAILABLE = Reply(451, "4.7.0", "Temporary content scanning failure, try again later")
MALWARE_REJECTED = Reply(550, "5.7.1", "Message rejected: it contains malware or a blocked file type")
DMARC_REJECTED = Reply(
    550,
    "5.7.509",
    "Access denied, sending domain {domain} does not pass DMARC verification "
    "and has a DMARC policy of reject",
)
POLICY_REJECTED = Reply(550, "5.7.1", "Delivery not authorized, message refused")
OUTBOUND_SPAM_REJECTED = Reply(
    550, "5.7.708", "Message refused: it was identified as spam; your administrator has been told"
)

MAX_FIELD = 200  # characters of any stranger-chosen value written into a report field
INLINE_PARSE_OCTETS = 262_144  # messages up to this size are MIME-walked on the event loop (< 2 ms)


class SpfCheck(Protocol):
    async def __call__(self, client_ip: str, mail_from: str, helo: str) -> SpfVerdict: ...


class Authentication(Protocol):
    async def authenticate(self, message: bytes, spf: SpfVerdict) -> AuthVerdict: ...

    def trusting(self, verdict: AuthVerdict, sealers: frozenset[str]) -> AuthVerdict: ...


# The common attachment filter (spec §10.3): the parsed message and the policy's file types in, a
# verdict out (CLEAN or BLOCKED_FILE_TYPE).
AttachmentFilter = Callable[[ParsedMessage, tuple[str, ...]], MalwareVerdict]


@dataclass(frozen=True, slots=True)
class RecipientFacts:
    """One final recipient as protection sees it."""

    recipient: str  # the address delivered to (lower case compared)
    tenant_id: int | None  # None: a recipient of no tenant (the service postmaster)
    mailbox_id: int | None = None
    member_of: tuple[str, ...] = ()  # the groups it was reached through


@dataclass(frozen=True, slots=True)
class Disposition:
    """What becomes of the message for one recipient."""

    action: FilterAction
    verdict: FilterVerdict
    headers: bytes  # the protection headers of this recipient's copy, CRLF-terminated
    sfv: str  # the spam filter verdict field of the report (NSPM, SPM, SKA, SKB, SFE, BLK, SKN, SKI, ...)
    scl: int
    policy: str = ""  # the policy whose action applies ("" for clean mail)
    reply: Reply | None = None  # REJECT: what the sender is told
    redirect_to: str = ""  # REDIRECT: where it goes
    subject_prefix: str = ""  # PREPEND_SUBJECT: the text
    x_header: str = ""  # X_HEADER: the field name
    quarantine_reason: str = ""  # QUARANTINE: malware, file-type, phish, ...
    access: str = ""  # QUARANTINE: the quarantine policy (who may release it)
    retention_days: int = 30

    @property
    def folder(self) -> str:
        """The mailbox folder of a delivered copy: Junk for the Junk action, and for spam and
        high-confidence spam whose action only marks them (X-header, subject): SCL 5 and over is
        junk in the mailbox (spec §10.4)."""
        if self.action is FilterAction.JUNK:
            return "Junk"
        marked = self.action in (FilterAction.X_HEADER, FilterAction.PREPEND_SUBJECT)
        spam = self.verdict in (FilterVerdict.SPAM, FilterVerdict.HIGH_CONFIDENCE_SPAM)
        return "Junk" if marked and spam else "Inbox"


@dataclass(frozen=True, slots=True)
class Inspection:
    """The stack's result for one message."""

    defer: Reply | None = None  # an engine was unavailable and the policy defers: nothing else applies
    message: bytes | None = None  # the message with foreign headers removed; None: unchanged
    dispositions: tuple[Disposition, ...] = ()  # one per recipient, in the order given
    auth: AuthVerdict | None = None
    malware: MalwareVerdict | None = None
    spam: SpamVerdict | None = None
    problems: tuple[str, ...] = ()  # what the MIME walk found malformed
    detail: dict[str, object] = field(default_factory=dict)  # the verdicts, for the Filter trace event


class Protection:
    """The node's filtering stack: its engines and limits (built by `app` from `[protection]`)."""

    def __init__(
        self,
        *,
        authserv_id: str,
        spf: SpfCheck,
        authentication: Authentication,
        malware: MalwareEngine,
        spam: SpamEngine,
        attachments: AttachmentFilter,
        strip: Callable[[bytes, str], bytes | None],
        mime_limits: MimeLimits,
        deliver_unscanned: bool = False,
        engine_timeout: float = 30.0,
        reverse: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        self.authserv_id = authserv_id
        self._spf = spf
        self._authentication = authentication
        self._malware = malware
        self.spam_engine = spam
        self._attachments = attachments
        self._strip = strip
        self._mime_limits = mime_limits
        self._deliver_unscanned = deliver_unscanned
        self._engine_timeout = engine_timeout
        self._reverse = reverse  # the client's verified reverse name (the report's PTR)

    async def inspect(
        self,
        message: bytes,
        facts: MessageFacts,
        recipients: Sequence[RecipientFacts],
        tenants: Mapping[int, TenantProtection],
        sender_lists: Mapping[int, MailboxSenderLists],
        listings: Mapping[int, ConnectionVerdict] | None = None,
        internal: Collection[int] = (),
    ) -> Inspection:
        """Run the stack on `message` and decide each recipient's disposition.

        `tenants` and `sender_lists` hold the recipients' tenants' policies and their mailboxes'
        lists; `listings` the connection filter's verdict per tenant where a tenant's own IP lists
        decided (else `facts.connection`, the service-wide one, applies); `internal` the tenants for
        which the message is internal (it came from the tenant's own on-premises server over an
        OnPremises connector that treats messages as internal): their copies skip anti-spam
        (`SFV:SKI`, `DIR:INT`; malware is still scanned)."""
        listings = listings or {}
        stripped = self._strip(message, self.authserv_id)
        body = stripped if stripped is not None else message
        if len(body) <= INLINE_PARSE_OCTETS:
            parsed = parse_message(body, self._mime_limits)
        else:  # a large message is walked off the event loop, which serves every other session
            parsed = await asyncio.to_thread(parse_message, body, self._mime_limits)
        if not facts.ptr and self._reverse is not None:
            facts = replace(facts, ptr=await self._reverse(facts.client_ip))
        spf = await self._spf(facts.client_ip, facts.mail_from, facts.helo)
        auth = await self._authentication.authenticate(body, spf)
        unscanned: list[str] = []
        try:
            malware = await asyncio.wait_for(self._malware.scan(body, parsed), self._engine_timeout)
        except (EngineUnavailable, TimeoutError) as error:
            if not self._deliver_unscanned:
                why: dict[str, object] = {"unavailable": _why(self._malware, error)}
                return Inspection(defer=ENGINE_UNAVAILABLE, detail=why)
            malware = MalwareVerdict(MalwareResult.UNSCANNED, self._malware.name, reason=str(error))
            unscanned.append(self._malware.name)
        spam_facts = replace(facts, auth=auth)
        skip_spam = all(
            listings.get(r.tenant_id or 0, facts.connection).listing is IpListing.ALLOWED
            or (r.tenant_id is not None and r.tenant_id in internal)
            for r in recipients
        )
        spam: SpamVerdict | None = None
        if not skip_spam:
            try:
                spam = await asyncio.wait_for(
                    self.spam_engine.check(body, parsed, spam_facts), self._engine_timeout
                )
            except (EngineUnavailable, TimeoutError) as error:
                if not self._deliver_unscanned:
                    return Inspection(
                        defer=ENGINE_UNAVAILABLE, detail={"unavailable": _why(self.spam_engine, error)}
                    )
                unscanned.append(self.spam_engine.name)
        from_domain = auth.dmarc.from_domain
        blocked_files: dict[tuple[str, ...], MalwareVerdict] = {}
        # The content verdict as a tenant that trusts an ARC sealer sees it: the engine judged the
        # message on our own authentication results, which the trusted seal overrides (checked again,
        # once per distinct view: forwarded mail only).
        trusted_spam: dict[int, SpamVerdict | None] = {}
        dispositions = []
        for recipient in recipients:
            tenant = tenants.get(recipient.tenant_id) if recipient.tenant_id is not None else None
            protection = tenant or TenantProtection(recipient.tenant_id or 0)
            spam_policy = protection.antispam_for(recipient.recipient, recipient.member_of)
            malware_policy = protection.antimalware_for(recipient.recipient, recipient.member_of)
            files = _file_verdict(self._attachments, parsed, malware_policy, blocked_files)
            seen = self._authentication.trusting(auth, spam_policy.trusted_arc_sealers)
            content = spam
            if seen is not auth and spam is not None:
                if id(seen) not in trusted_spam:
                    trusted_spam[id(seen)] = await self._recheck(body, parsed, replace(spam_facts, auth=seen))
                content = trusted_spam[id(seen)] or spam
            lists = sender_lists.get(recipient.mailbox_id or -1, MailboxSenderLists())
            listing = listings.get(recipient.tenant_id or 0, facts.connection)
            inside = recipient.tenant_id is not None and recipient.tenant_id in internal
            disposition = decide(
                Verdicts(seen, malware, files, content, listing, tuple(unscanned), internal=inside),
                spam_policy,
                malware_policy,
                lists,
                sender=facts.mail_from,
                header_from=from_domain,
            )
            seen_facts = replace(facts, connection=listing)
            if inside:
                seen_facts = replace(seen_facts, direction=Direction.INTRA_ORG)
            report = render_headers(seen, disposition, content, seen_facts, unscanned=tuple(unscanned))
            dispositions.append(replace(disposition, headers=report))
        detail = _detail(auth, malware, spam, parsed.problems, unscanned)
        return Inspection(
            message=stripped,
            dispositions=tuple(dispositions),
            auth=auth,
            malware=malware,
            spam=spam,
            problems=parsed.problems,
            detail=detail,
        )

    async def _recheck(self, body: bytes, parsed: ParsedMessage, facts: MessageFacts) -> SpamVerdict | None:
        """The spam engine's verdict on `facts` (another view of authentication), or None when it is
        unavailable now (the first verdict stands)."""
        try:
            return await asyncio.wait_for(self.spam_engine.check(body, parsed, facts), self._engine_timeout)
        except (EngineUnavailable, TimeoutError):
            return None


def _why(engine: MalwareEngine | SpamEngine, error: BaseException) -> str:
    return f"{engine.name}: {error or 'timed out'}"


def _file_verdict(
    attachments: AttachmentFilter,
    parsed: ParsedMessage,
    policy: AntiMalwarePolicy,
    seen: dict[tuple[str, ...], MalwareVerdict],
) -> MalwareVerdict | None:
    """The attachment filter's verdict under `policy` (computed once per distinct list of types)."""
    if not policy.file_filter:
        return None
    key = policy.file_types
    if key not in seen:
        seen[key] = attachments(parsed, key)
    return seen[key]


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Every check's verdict about one message, as one recipient's tenant sees it."""

    auth: AuthVerdict
    malware: MalwareVerdict
    files: MalwareVerdict | None
    spam: SpamVerdict | None  # None: spam filtering skipped (IP Allow) or its engine was unavailable
    connection: ConnectionVerdict
    unscanned: tuple[str, ...] = ()
    internal: bool = False  # the message is internal to the recipient's tenant: no anti-spam (SKI)


def decide(
    verdicts: Verdicts,
    spam_policy: AntiSpamPolicy,
    malware_policy: AntiMalwarePolicy,
    lists: MailboxSenderLists,
    *,
    sender: str,
    header_from: str,
) -> Disposition:
    """One recipient's disposition: the most severe verdict by the spec's precedence, and its action
    under the recipient's policies. `headers` is left empty (`render_headers` fills it)."""
    auth, spam = verdicts.auth, verdicts.spam
    # 1. Malware: always quarantined, admin only (spec §10.3); a blocked file type by policy.
    if verdicts.malware.result is MalwareResult.INFECTED:
        return _held(FilterVerdict.MALWARE, "malware", malware_policy.name, malware_policy, "SPM", 9)
    files = verdicts.files
    if files is not None and files.result is MalwareResult.BLOCKED_FILE_TYPE:
        if malware_policy.file_action is FilterAction.REJECT:
            verdict, name = FilterVerdict.MALWARE, malware_policy.name
            return Disposition(FilterAction.REJECT, verdict, b"", "SPM", 9, name, MALWARE_REJECTED)
        return _held(FilterVerdict.MALWARE, "file-type", malware_policy.name, malware_policy, "SPM", 9)
    if verdicts.internal:
        # Internal to the tenant (spec §3.1 TreatMessagesAsInternal): anti-spam, spoof and the
        # sender lists do not apply; malware did, above.
        return Disposition(FilterAction.INBOX, FilterVerdict.CLEAN, b"", "SKI", -1)
    from_address = sender.lower()
    authenticated = auth.compauth in (CompAuthResult.PASS, CompAuthResult.SOFTPASS)
    scl = spam.scl if spam is not None else -1
    bcl = spam.bcl if spam is not None else 0
    category = spam.category if spam is not None else SpamCategory.NONE
    # 2-3. Phish: high confidence is quarantined whatever the lists say (spec §10.4: forced).
    if category is SpamCategory.HIGH_CONFIDENCE_PHISH:
        return _spam_action(
            FilterVerdict.HIGH_CONFIDENCE_PHISH, FilterAction.QUARANTINE, spam_policy, "SPM", max(scl, 9)
        )
    # The mailbox's own lists and the policy's lists come before the content verdicts below.
    domain_from = header_from or from_address.rpartition("@")[2]
    if lists.blocked.matches(from_address) or lists.blocked.matches(f"x@{domain_from}"):
        return _spam_action(FilterVerdict.SPAM, FilterAction.JUNK, spam_policy, "BLK", max(scl, 6))
    if spam_policy.blocked.matches(from_address) or spam_policy.blocked.matches(f"x@{domain_from}"):
        return _spam_action(
            FilterVerdict.HIGH_CONFIDENCE_SPAM, spam_policy.high_confidence_spam_action, spam_policy, "SKB", 9
        )
    safe = lists.safe.matches(from_address) or lists.safe.matches(f"x@{domain_from}")
    if safe and authenticated and category is not SpamCategory.PHISH:
        return Disposition(FilterAction.INBOX, FilterVerdict.CLEAN, b"", "SFE", -1)
    allowed = spam_policy.allowed.matches(from_address) or spam_policy.allowed.matches(f"x@{domain_from}")
    if allowed and authenticated and category is not SpamCategory.PHISH:
        return Disposition(FilterAction.INBOX, FilterVerdict.CLEAN, b"", "SKA", -1)
    if category is SpamCategory.PHISH:
        return _spam_action(FilterVerdict.PHISH, spam_policy.phish_action, spam_policy, "SPM", max(scl, 5))
    if verdicts.connection.listing is IpListing.ALLOWED:
        return Disposition(FilterAction.INBOX, FilterVerdict.CLEAN, b"", "SKN", -1)
    # 4. High-confidence spam.
    if scl >= 7:
        action = spam_policy.high_confidence_spam_action
        return _spam_action(FilterVerdict.HIGH_CONFIDENCE_SPAM, action, spam_policy, "SPM", scl)
    # 5. Spoof: DMARC failed (honoured as the tenant chose), or the composite verdict failed.
    spoof = _spoof(auth, spam_policy)
    if spoof is not None:
        return spoof
    # 6. Spam.
    if scl >= spam_policy.junk_threshold:
        return _spam_action(FilterVerdict.SPAM, spam_policy.spam_action, spam_policy, "SPM", scl)
    # 7. Bulk.
    if bcl >= spam_policy.bulk_threshold and spam_policy.mark_bulk_as_spam:
        return _spam_action(FilterVerdict.BULK, spam_policy.bulk_action, spam_policy, "SPM", max(scl, 6))
    return Disposition(FilterAction.INBOX, FilterVerdict.CLEAN, b"", "NSPM", max(scl, 0) if spam else -1)


def _held(
    verdict: FilterVerdict, reason: str, policy: str, malware_policy: AntiMalwarePolicy, sfv: str, scl: int
) -> Disposition:
    return Disposition(
        FilterAction.QUARANTINE,
        verdict,
        b"",
        sfv,
        scl,
        policy,
        quarantine_reason=reason,
        access=ADMIN_ONLY,
        retention_days=malware_policy.quarantine_retention_days,
    )


_QUARANTINE_REASONS = {
    FilterVerdict.HIGH_CONFIDENCE_PHISH: "high-confidence-phish",
    FilterVerdict.PHISH: "phish",
    FilterVerdict.HIGH_CONFIDENCE_SPAM: "high-confidence-spam",
    FilterVerdict.SPOOF: "spoof",
    FilterVerdict.SPAM: "spam",
    FilterVerdict.BULK: "bulk",
}


def _spam_action(
    verdict: FilterVerdict, action: FilterAction, policy: AntiSpamPolicy, sfv: str, scl: int
) -> Disposition:
    """The disposition of a spam-type verdict under `policy`'s action for it."""
    if verdict is FilterVerdict.HIGH_CONFIDENCE_PHISH:
        action = FilterAction.QUARANTINE  # forced (spec §10.4)
    access = ADMIN_ONLY if verdict is FilterVerdict.HIGH_CONFIDENCE_PHISH else FULL_ACCESS
    retention = policy.quarantine_retention_days
    base = Disposition(action, verdict, b"", sfv, scl, policy.name, retention_days=retention)
    if action is FilterAction.QUARANTINE:
        return replace(base, quarantine_reason=_QUARANTINE_REASONS[verdict], access=access)
    if action is FilterAction.REDIRECT:
        if not policy.redirect_to:
            return replace(base, action=FilterAction.JUNK)
        return replace(base, redirect_to=policy.redirect_to)
    if action is FilterAction.PREPEND_SUBJECT:
        return replace(base, subject_prefix=policy.subject_prefix)
    if action is FilterAction.X_HEADER:
        return replace(base, x_header=x_header_name(policy.x_header))
    if action is FilterAction.REJECT:
        return replace(base, reply=POLICY_REJECTED)
    return base


def _spoof(auth: AuthVerdict, policy: AntiSpamPolicy) -> Disposition | None:
    """The spoof verdict of a DMARC failure: by the tenant's choice, the domain's policy honoured
    (reject, quarantine) or, as Exchange does by default, marked spoof (`oreject`) and given the
    spoof action."""
    dmarc = auth.dmarc
    if dmarc.result is not DmarcResult.FAIL:
        return None
    if dmarc.action in (DmarcAction.NONE, DmarcAction.PCT_QUARANTINE, DmarcAction.PCT_REJECT):
        return None  # p=none, or sampled out by pct: no action on the domain's behalf
    base = Disposition(FilterAction.JUNK, FilterVerdict.SPOOF, b"", "SPM", 6, policy.name)
    if policy.honor_dmarc and dmarc.policy is DmarcPolicy.REJECT:
        action = policy.dmarc_reject_action
        if action is FilterAction.REJECT:
            reply = DMARC_REJECTED.with_text(DMARC_REJECTED.text.format(domain=_field(dmarc.from_domain)))
            return replace(base, action=action, reply=reply)
        return _spam_action(FilterVerdict.SPOOF, action, policy, "SPM", 6)
    if policy.honor_dmarc and dmarc.policy is DmarcPolicy.QUARANTINE:
        return _spam_action(FilterVerdict.SPOOF, policy.dmarc_quarantine_action, policy, "SPM", 6)
    return _spam_action(FilterVerdict.SPOOF, policy.spoof_action, policy, "SPM", 6)


_CATEGORIES = {
    FilterVerdict.MALWARE: "MALW",
    FilterVerdict.HIGH_CONFIDENCE_PHISH: "HPHSH",
    FilterVerdict.PHISH: "PHSH",
    FilterVerdict.HIGH_CONFIDENCE_SPAM: "HSPM",
    FilterVerdict.SPOOF: "SPOOF",
    FilterVerdict.SPAM: "SPM",
    FilterVerdict.BULK: "BULK",
    FilterVerdict.CLEAN: "NONE",
}


def render_headers(
    auth: AuthVerdict,
    disposition: Disposition,
    spam: SpamVerdict | None,
    facts: MessageFacts,
    *,
    unscanned: tuple[str, ...] = (),
) -> bytes:
    """The protection headers of one recipient's copy (spec §10.7 under our names), CRLF-terminated."""
    category = _CATEGORIES[disposition.verdict]
    if disposition.verdict is FilterVerdict.MALWARE and disposition.quarantine_reason == "file-type":
        category = "FTBP"
    bcl = spam.bcl if spam is not None else 0
    report = [
        ("CIP", facts.client_ip),
        ("CTRY", ""),
        ("LANG", ""),
        ("SCL", str(disposition.scl)),
        ("SRV", "BULK" if disposition.verdict is FilterVerdict.BULK else ""),
        ("IPV", facts.connection.listing.value),
        ("SFV", disposition.sfv if not unscanned or disposition.sfv != "NSPM" else "UNS"),
        ("H", facts.helo),
        ("PTR", facts.ptr),
        ("CAT", category),
        ("SFTY", ""),
        ("DIR", facts.direction.value),
        ("SPF", auth.spf.result.value),
    ]
    text = "".join(f"{name}:{_field(value)};" for name, value in report)
    lines = [auth.header.rstrip("\r\n")] if auth.header else []
    lines.append(f"{headers.ANTISPAM_REPORT}: {text}")
    lines.append(f"{headers.ANTISPAM}: BCL:{bcl};")
    if disposition.action is FilterAction.X_HEADER:
        lines.append(f"{disposition.x_header}: {headers.SPAM_VALUE}")
    if unscanned:
        lines.append(f"{headers.NOT_SCANNED}: not scanned; {', '.join(unscanned)} unavailable")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")


def x_header_name(name: str) -> str:
    """The X-header action's field name: the policy's, or `X-This-Is-Spam` when it is not a valid
    field name (space or colon, spec §10.4)."""
    return name if _HEADER_NAME.match(name) else "X-This-Is-Spam"


_UNSAFE = re.compile(r"[^\x21-\x7e]|;")


def _field(value: str) -> str:
    """A stranger-chosen value made safe for a report field: printable ASCII without `;`, bounded."""
    return _UNSAFE.sub("", value)[:MAX_FIELD]


def _detail(
    auth: AuthVerdict,
    malware: MalwareVerdict,
    spam: SpamVerdict | None,
    problems: Iterable[str],
    unscanned: list[str],
) -> dict[str, object]:
    """The message's verdicts for its Filter trace event (bounded: no stranger-sized lists)."""
    detail: dict[str, object] = {
        "spf": auth.spf.result.value,
        "dkim": ",".join(sorted({d.result.value for d in auth.dkim})) or "none",
        "dmarc": auth.dmarc.result.value,
        "dmarc_action": auth.dmarc.action.value,
        "compauth": f"{auth.compauth.value} reason={auth.compauth_reason:03d}",
        "malware": malware.result.value,
    }
    if malware.names:
        detail["malware_names"] = list(malware.names[:10])
    if spam is not None:
        detail.update(
            scl=spam.scl, bcl=spam.bcl, category=spam.category.value, engine=spam.engine, score=spam.score
        )
        if spam.symbols:
            detail["symbols"] = list(spam.symbols[:20])
    problems = list(problems)
    if problems:
        detail["mime_problems"] = problems[:10]
    if unscanned:
        detail["unscanned"] = list(unscanned)
    return detail
