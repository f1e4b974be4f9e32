"""The submission endpoint: SMTP AUTH clients (users, devices, applications) sending mail (spec §5).

Two listeners share one `SubmissionEndpoint`: the port 587 role (STARTTLS; AUTH only after it) and
the port 465 role (implicit TLS). The SMTP core runs the SASL exchange and refuses MAIL before AUTH
(530 5.7.57); `SubmissionSession.authenticate` decides each login. A `SubmissionSession` is an
`MxSession` (the same RCPT resolution, commit job, trace and mail log) with these differences:

- **Login**: the address and password of a mailbox (Argon2id, in a worker thread, never on the event
  loop; a login verified in the last `[submission] auth_cache_seconds` is not hashed again, see
  `app.logins`). Failures get 535 5.7.8 and are counted per client IP and per account; past
  `auth_failures_before_throttle` of either, every login gets 454 4.7.0 (the right password too), past
  `auth_failures_before_disconnect` 421 and the connection closes; the counts are the node's, shared
by all its worker processes (`app.logins.SharedCounts`). Every failure is logged at
  warning (logger `postroom.app.submission`) with the client IP and the account, never the
  password. A mailbox whose SMTP AUTH is off (itself, or its tenant) gets 535 5.7.139. An `authzid`
  other than the login name is refused like a wrong password.
- **Relay**: an authenticated session's recipients may be remote (`routing.resolve_recipient` with
  `authenticated_tenant`), and a recipient in another tenant's domain is remote too (it leaves and
  comes back in through the MX); its sender is inside its tenant (group delivery restrictions).
- **Send-as**: the envelope sender (at MAIL) and every `From:` address (at the end of DATA) must be
  an address of the mailbox, or of a mailbox or group it was granted send-as on; otherwise 550
  5.7.60. The null sender is refused the same way.
- **Limits**: recipients per message (the mailbox's, else `[submission] max_recipients`; past it 452
  4.5.3); the send size (SIZE= at MAIL and the real size at the end of DATA: 552 5.2.3); messages
  per minute per mailbox (`messages_per_minute`; past it 450 4.7.0 and nothing is queued), counted
  like failed logins in the count every worker of the node shares (`app.logins.SharedCounts`, not
  durable: a restart of the machine forgets the last minute); recipients per UTC day
  (`recipients_per_day`), counted durably in the commit's transaction (`directory.charge_recipients`):
  a message that would pass it gets 550 5.1.90 and the sender is restricted until the next UTC day or
  an administrator's release; while restricted, MAIL gets 550 5.2.2.
- **Missing fields** (RFC 6409 §8.3, §8.4): a message without a `Date` or `Message-ID` (a scanner's,
  an application's) gets them, after the Received header: the date of receipt and
  `<internal id@host name>`; the Sent copy, the trace and the DKIM signature see the same fields.
- **Commit**: in the same transaction as the spool write, a copy goes into the sender's Sent folder;
  internal recipients are delivered at commit, external ones queued (route remote). The trace event
  is `Submit` (client IP, account, TLS) in place of `Receive`, and the Received header names the
  protocol with RFC 3848's `A` (ESMTPSA).

Security: a session is anonymous until `authenticate` returned 235; the account it holds then is the
only identity it sends as. Nothing here trusts the client's words about who it is beyond the
password check.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.utils import format_datetime, getaddresses
from functools import partial

from sqlalchemy import Connection

from postroom.app.logins import VerifiedLogins, WindowCounts
from postroom.app.mx import CommitResult, Envelope, MxEndpoint, MxSession, Received, commit_received
from postroom.directory import (
    Directory,
    SubmissionAccount,
    charge_recipients,
    charge_spam,
    find_submission_account,
    restricted_until,
)
from postroom.mailstore import SENT_FOLDER, LocalDelivery, deliver
from postroom.model import Address, AddressError, Reply, replies
from postroom.model.flow import EventKind
from postroom.model.verdicts import Direction, MalwareResult, SpamCategory
from postroom.protection.pipeline import MALWARE_REJECTED, OUTBOUND_SPAM_REJECTED, Inspection
from postroom.routing import Rejected, RejectReason
from postroom.smtp import ConnectionInfo, MailParams, RcptParams, SaslCredentials
from postroom.storage import Database

MINUTE = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    """The `[submission]` defaults and login limits the endpoint enforces."""

    max_send_size: int
    max_recipients: int
    messages_per_minute: int
    recipients_per_day: int
    outbound_spam_per_day: int
    auth_failure_window: float
    auth_failures_before_throttle: int
    auth_failures_before_disconnect: int
    auth_cache_seconds: float


class SubmissionEndpoint:
    """The process-wide part of submission: the MX endpoint's services, logins and the message rates."""

    def __init__(
        self,
        mx: MxEndpoint,
        directory: Directory,
        database: Database,
        limits: SubmissionLimits,
        *,
        failed_logins: WindowCounts,
        messages: WindowCounts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`failed_logins` counts over `limits.auth_failure_window`, `messages` over a minute."""
        self.mx = mx
        self.directory = directory
        self._database = database
        self.limits = limits
        self.failed_logins = failed_logins
        self.verified_logins = VerifiedLogins(limits.auth_cache_seconds, clock)
        self._messages = messages  # "mailbox:<id>" -> its messages of the last minute

    def session(self, connection: ConnectionInfo) -> SubmissionSession:
        return SubmissionSession(self, connection)

    async def rate_exceeded(self, mailbox_id: int, *, take: bool) -> bool:
        """True when the mailbox sent `messages_per_minute` in the last minute; `take` counts one more."""
        key, most = f"mailbox:{mailbox_id}", self.limits.messages_per_minute
        if take:
            return not await self.mx.lookup(partial(self._messages.take, key, most))
        return await self.mx.lookup(partial(self._messages.count, key)) >= most

    async def failures(self, client: str, account: str) -> int:
        """Failed logins lately from this client IP or for this account, whichever has more."""
        failed = self.failed_logins
        return await self.mx.lookup(
            lambda: max(failed.count(f"ip:{client}"), failed.count(f"account:{account}"))
        )

    async def add_failure(self, client: str, account: str) -> None:
        def add() -> None:
            self.failed_logins.add(f"ip:{client}")
            self.failed_logins.add(f"account:{account}")

        await self.mx.lookup(add)

    async def login(self, account_key: str, password: str) -> SubmissionAccount | None:
        """The mailbox when `password` is its password; None otherwise (one Argon2 check, off the loop,
        unless this login was verified lately)."""
        account = await self.mx.lookup(partial(self._account, account_key))
        if account is not None and self.verified_logins.holds(account_key, password, account.password_stamp):
            return account
        if not await self.mx.lookup(partial(self.directory.check_password, account_key, password)):
            return None
        if account is None:
            return None  # the mailbox came into being between the two reads: try again
        self.verified_logins.remember(account_key, password, account.password_stamp)
        return account

    def _account(self, key: str) -> SubmissionAccount | None:
        with self._database.read() as conn:
            return find_submission_account(conn, key)

    def _restricted(self, mailbox_id: int) -> bool:
        with self._database.read() as conn:
            return restricted_until(conn, mailbox_id, time.time()) is not None

    async def restricted(self, mailbox_id: int) -> bool:
        return await self.mx.lookup(partial(self._restricted, mailbox_id))


_OUTBOUND_REFUSED = (
    SpamCategory.PHISH,
    SpamCategory.HIGH_CONFIDENCE_PHISH,
    SpamCategory.HIGH_CONFIDENCE_SPAM,
)


class SubmissionSession(MxSession):
    """One connection to a submission listener."""

    receive_event = EventKind.SUBMIT
    direction = Direction.OUTBOUND
    connection_filtered = False  # authenticated senders: their limits are the submission's own

    def __init__(self, endpoint: SubmissionEndpoint, connection: ConnectionInfo) -> None:
        super().__init__(endpoint.mx, connection)
        self._submission = endpoint
        self.account: SubmissionAccount | None = None

    async def authenticate(self, credentials: SaslCredentials) -> Reply:
        endpoint = self._submission
        limits = endpoint.limits
        login = credentials.authcid.strip()
        try:
            key = Address.parse(login).key
        except AddressError:
            key = login.casefold()
        client = self.connection.peer_ip
        failures = await endpoint.failures(client, key)
        if failures >= limits.auth_failures_before_disconnect:
            return await self._login_failed(
                client, key, "too many failed logins; disconnecting", replies.AUTH_TOO_MANY_FAILURES
            )
        if failures >= limits.auth_failures_before_throttle:
            return await self._login_failed(
                client, key, "too many failed logins; throttled", replies.AUTH_THROTTLED
            )
        account = await endpoint.login(key, credentials.password)
        if account is None:
            return await self._login_failed(client, key, "wrong user name or password", replies.AUTH_FAILED)
        if credentials.authzid and credentials.authzid.strip().casefold() != login.casefold():
            return await self._login_failed(
                client, key, "asked to act as another identity", replies.AUTH_FAILED
            )
        if not account.smtp_auth:
            log.warning("SMTP AUTH refused: client=%s account=%s SMTP AUTH is disabled", client, key)
            return replies.AUTH_DISABLED
        self.account = account
        self.sender_internal_to = account.tenant_id
        self.authenticated_tenant = account.tenant_id
        return replies.AUTH_SUCCEEDED

    async def _login_failed(self, client: str, account: str, reason: str, reply: Reply) -> Reply:
        await self._submission.add_failure(client, account)
        log.warning("SMTP AUTH failed: client=%s account=%s %s (%s)", client, account, reason, reply.enhanced)
        return reply

    async def mail_from(self, sender: Address | None, params: MailParams) -> Reply:
        account = self.account
        assert account is not None, "the SMTP core asks for AUTH before MAIL on submission"
        if sender is None or sender.key not in account.senders:
            return replies.SEND_AS_DENIED
        if await self._submission.restricted(account.mailbox_id):
            return replies.SUBMISSION_QUOTA_EXCEEDED
        if await self._submission.rate_exceeded(account.mailbox_id, take=False):
            return replies.MESSAGE_RATE_EXCEEDED
        if params.size is not None and params.size > self._send_limit(account):
            return replies.SENDER_SIZE_EXCEEDED
        return await super().mail_from(sender, params)

    async def rcpt_to(self, recipient: Address, params: RcptParams) -> Reply:
        envelope, account = self.envelope, self.account
        assert envelope is not None and account is not None, "the SMTP core sends RCPT only after MAIL"
        most = account.max_recipients or self._submission.limits.max_recipients
        if len(envelope.accepted) >= most:
            reply = replies.TOO_MANY_RECIPIENTS
            refused = Rejected(recipient, reply, RejectReason.SENDER_RECIPIENT_LIMIT, account.tenant_id)
            if self._traced_alone(envelope, str(recipient), reply):
                envelope.rejected.append(refused)
            return reply
        return await super().rcpt_to(recipient, params)

    async def _judge(self, envelope: Envelope, inspection: Inspection) -> Reply | None:
        """Outbound spam (spec §10.5): a submitted message with malware, phishing or high-confidence
        spam is refused, and counted against the sender's UTC day; the `outbound_spam_per_day`th
        restricts the sender until the next day (its later messages get 550 5.2.2)."""
        account = self.account
        assert account is not None
        malware = inspection.malware
        if malware is not None and malware.result is MalwareResult.INFECTED:
            return MALWARE_REJECTED
        spam = inspection.spam
        if spam is None or (spam.scl < 7 and spam.category not in _OUTBOUND_REFUSED):
            return None
        limit = self._submission.limits.outbound_spam_per_day
        now = self._endpoint.clock()
        mailbox, tenant = account.mailbox_id, account.tenant_id
        if await self._endpoint.committer.run(lambda conn: charge_spam(conn, mailbox, tenant, now, limit)):
            log.warning("sender %s restricted: %d messages refused as spam today", account.address, limit)
        return OUTBOUND_SPAM_REJECTED

    def _authenticated_user(self) -> str:
        return self.account.address if self.account is not None else ""

    def _send_limit(self, account: SubmissionAccount) -> int:
        return account.max_send_size or self._submission.limits.max_send_size

    async def _check_message(self, envelope: Envelope, size: int, head: bytes) -> Reply | None:
        account = self.account
        assert account is not None
        if size > self._send_limit(account):
            return replies.SENDER_SIZE_EXCEEDED
        if not _from_allowed(head, account.senders):
            return replies.SEND_AS_DENIED
        if await self._submission.rate_exceeded(account.mailbox_id, take=True):
            return replies.MESSAGE_RATE_EXCEEDED
        return None

    def _commit_job(self, received: Received) -> Callable[[Connection], CommitResult]:
        account = self.account
        assert account is not None
        received, added = _with_missing_fields(received, self._submission.mx.hostname)
        detail = {**received.receive_detail, "account": account.address}
        received = replace(received, receive_detail=detail)
        limit = self._submission.limits.recipients_per_day
        return partial(_commit_submitted, received, account, limit, added)


def _with_missing_fields(received: Received, hostname: str) -> tuple[Received, bytes]:
    """The message with the Date and Message-ID it lacks appended to its prefix, and those fields."""
    entry = received.entry
    summary = entry.summary
    date = summary.date or format_datetime(
        datetime.datetime.fromtimestamp(int(entry.received_at), datetime.UTC)
    )
    message_id = summary.message_id or f"<{entry.id}@{hostname}>"
    added = (b"" if summary.date else f"Date: {date}\r\n".encode()) + (
        b"" if summary.message_id else f"Message-ID: {message_id}\r\n".encode()
    )
    if not added:
        return received, b""
    entry = replace(
        entry,
        prefix=entry.prefix + added,
        size=entry.size + len(added),
        summary=replace(summary, date=date, message_id=message_id),
    )
    detail = {**received.receive_detail, "size": entry.size, "message_id": message_id}
    return replace(received, entry=entry, receive_detail=detail), added


def _from_allowed(head: bytes, senders: frozenset[str]) -> bool:
    """Whether the message has a From header and every address in it is one the sender may use."""
    headers = BytesHeaderParser(policy=SMTP).parsebytes(head)
    values = [str(value) for value in headers.get_all("From", [])]
    found = [address for _, address in getaddresses(values) if address]
    if not found:
        return False
    for text in found:
        try:
            if Address.parse(text).key not in senders:
                return False
        except AddressError:
            return False
    return True


def _commit_submitted(
    received: Received, account: SubmissionAccount, daily_limit: int, added: bytes, conn: Connection
) -> CommitResult:
    """The commit job of a submitted message: the sender's restriction and daily count, then the
    message as the MX endpoint commits it, and its copy in the sender's Sent folder (without the
    Received header, with the `added` fields)."""
    entry = received.entry
    if restricted_until(conn, account.mailbox_id, entry.received_at) is not None:
        return replies.SUBMISSION_QUOTA_EXCEEDED
    count = len(received.envelope.accepted)
    if not charge_recipients(
        conn, account.mailbox_id, account.tenant_id, count, entry.received_at, daily_limit
    ):
        log.warning(
            "sender %s restricted: would pass its daily recipient limit of %d", account.address, daily_limit
        )
        return replies.DAILY_RECIPIENT_LIMIT
    outcomes = commit_received(received, EventKind.SUBMIT, conn)
    sent_copy = LocalDelivery(
        mailbox_id=account.mailbox_id,
        folder=SENT_FOLDER,
        blob_id=entry.blob_id,
        prefix=added,
        size=entry.size - len(entry.prefix) + len(added),
        internal_date=entry.received_at,
        summary=entry.summary,
        trace_id=entry.id,
    )
    deliver(conn, [sent_copy])
    return outcomes
