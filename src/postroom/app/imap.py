"""The IMAP endpoint: the node's side of an IMAP session (login, storage, notifications, junk reports).

`ImapEndpoint` is the process-wide part of the IMAP room, and `NodeMailAccess` the `MailAccess` each
session gets (`imap.session`):

- **Login**: the address and password of a mailbox, as SMTP AUTH checks them
  (`directory.find_submission_account`, Argon2id in a worker thread, never on the event loop; a login
  verified in the last `[imap] auth_cache_seconds` is not hashed again: `app.logins.VerifiedLogins`).
  Failures are counted per client IP and per account in the node's `SharedCounts` (every worker
  process sees them): past `auth_failures_before_throttle` of either every login gets `NO
  [UNAVAILABLE]` (the right password too), past `auth_failures_before_disconnect` `* BYE`. Each failure
  is logged at warning (logger `postroom.app.imap`) with the client IP and the account, never the
  password. A mailbox whose tenant was removed has no address left in the directory: it cannot log
  in, and a new tenant reusing its names gets new mailbox ids.
- **Storage**: reads run in a worker thread on a read connection; writes run in the group committer,
  so a session answers OK after the durable commit. Message octets come from the blob store (the
  service's prefix, then the blob), a command's batch in one `get_many` / `head_many` call.
- **Notifications**: every write to a mailbox (delivery, another session, this one) is announced
  after its commit as `mailbox:<id>` (`mailstore.mailbox.change_topic`) on `App.notifications`,
  which reaches every process of every node; sessions watch the topic of their mailbox while a
  folder is selected.
- **Junk reports**: a message moved or copied into the Junk folder is learned as spam, one moved out
  of it (not to Trash) as not spam, by the node's spam learner (`app.filtering.spam_learner`: Rspamd's
  learn endpoints or the built-in scorer), in a background task: the command's OK does not wait, and
  a failure is logged. Each report is traced (`EventKind.JUNK_REPORT`) on the message's trace when
  the message has one (mail appended by a client has none). Bounded: at most `JUNK_REPORT_MOST`
  messages of one command are learned (a user dragging a whole folder into Junk does not make the
  node read and post every message; the rest are traced "not learned") and at most `JUNK_LEARNERS`
  reports learn at once in a process, whatever the number of sessions.
- **Structure cache**: the messages a FETCH of ENVELOPE, BODY or BODYSTRUCTURE or a SEARCH found
  uncached get their ENVELOPE, BODYSTRUCTURE and SEARCH header text (`imap.cache.cached_texts`)
  computed from their bytes in a worker thread and stored (`mailbox.cache_structure`) in background
  writer jobs of `CACHE_BATCH` messages; one folder is filled by one task at a time. APPEND and the
  migration store these texts with the message (they have the bytes in hand).

Security: `login` is the only way to an `ImapAccount`; everything after it is keyed by that
account's mailbox id, which the session never takes from the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from sqlalchemy import Connection

from postroom.app.logins import VerifiedLogins, WindowCounts
from postroom.cluster import Notifications
from postroom.directory import Directory, find_submission_account
from postroom.imap.cache import HEADER_OCTETS, cached_texts
from postroom.imap.session import ImapAccount, ImapSession, LoginRefused, SessionLimits
from postroom.mailstore import mailbox as store
from postroom.model import Address, AddressError
from postroom.model.flow import EventKind, TraceEvent
from postroom.quarantine.hold import record_traced
from postroom.storage import BlobStore, Database, GroupCommitter

T = TypeVar("T")

CACHE_BATCH = 500  # messages whose ENVELOPE and BODYSTRUCTURE one writer job stores
JUNK_REPORT_MOST = 100  # messages of one MOVE or COPY that are learned (the rest: traced, not learned)
JUNK_LEARNERS = 2  # junk reports a process learns at once (the others wait their turn)

log = logging.getLogger(__name__)

Learn = Callable[[bytes, bool], Awaitable[None]]


class ImapEndpoint:
    """The process-wide part of IMAP: logins, the stores, notifications, the spam learner."""

    def __init__(
        self,
        database: Database,
        directory: Directory,
        committer: GroupCommitter,
        blobs: BlobStore,
        notifications: Notifications,
        *,
        limits: SessionLimits,
        failed_logins: WindowCounts,
        throttle_after: int,
        disconnect_after: int,
        auth_cache_seconds: float,
        plaintext_login: bool,
        learn: Learn | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.directory = directory
        self.committer = committer
        self.blobs = blobs
        self.notifications = notifications
        self.limits = limits
        self.failed_logins = failed_logins
        self.throttle_after = throttle_after
        self.disconnect_after = disconnect_after
        self.verified_logins = VerifiedLogins(auth_cache_seconds, clock)
        self.plaintext_login = plaintext_login
        self._learn = learn
        self._learners = asyncio.Semaphore(JUNK_LEARNERS)
        self._background: set[asyncio.Task[None]] = set()
        self.filling: set[int] = set()  # folders whose structure cache a background task is filling

    def session(
        self, client: str, tls: bool, starttls: bool, write: Callable[[bytes], Awaitable[None]]
    ) -> ImapSession:
        return ImapSession(
            NodeMailAccess(self),
            self.limits,
            write,
            client=client,
            tls=tls,
            starttls=starttls,
            plaintext_login=self.plaintext_login,
        )

    # --- login -----------------------------------------------------------------------------------
    async def login(self, user: str, password: str, client: str) -> ImapAccount | LoginRefused:
        try:
            key = Address.parse(user).key
        except AddressError:
            key = user.casefold()
        failed = self.failed_logins
        failures = await asyncio.to_thread(
            lambda: max(failed.count(f"ip:{client}"), failed.count(f"account:{key}"))
        )
        if failures >= self.disconnect_after:
            return await self._failed(
                client, key, "too many failed logins; disconnecting", LoginRefused.DISCONNECT
            )
        if failures >= self.throttle_after:
            return await self._failed(
                client, key, "too many failed logins; throttled", LoginRefused.THROTTLED
            )
        account = await asyncio.to_thread(self._account, key)
        if account is not None and self.verified_logins.holds(key, password, account[1]):
            return account[0]
        checked = await asyncio.to_thread(self.directory.check_password, key, password)  # always hashed
        if account is None or not checked:
            return await self._failed(client, key, "wrong user name or password", LoginRefused.FAILED)
        self.verified_logins.remember(key, password, account[1])
        return account[0]

    def _account(self, key: str) -> tuple[ImapAccount, str] | None:
        with self.database.read() as conn:
            found = find_submission_account(conn, key)
            if found is None:
                return None
            quota = store.mailbox_quota(conn, found.mailbox_id)
        account = ImapAccount(found.mailbox_id, found.tenant_id, found.address, quota)
        return account, found.password_stamp

    async def _failed(self, client: str, account: str, reason: str, refusal: LoginRefused) -> LoginRefused:
        failed = self.failed_logins

        def add() -> None:
            failed.add(f"ip:{client}")
            failed.add(f"account:{account}")

        await asyncio.to_thread(add)
        log.warning("IMAP login failed: client=%s account=%s %s", client, account, reason)
        return refusal

    # --- background work -------------------------------------------------------------------------
    def background(self, work: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("IMAP %s failed", what)

        task = asyncio.create_task(run(), name=f"postroom-imap-{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Wait for the background work (junk reports, cache writes) still running."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=10.0)

    async def fill_cache(self, folder_id: int, records: list[store.MessageRecord]) -> None:
        """Compute ENVELOPE and BODYSTRUCTURE from each message's bytes (in a worker thread) and store
        them, `CACHE_BATCH` messages per writer job (the writer is never held long)."""
        try:
            for start in range(0, len(records), CACHE_BATCH):
                batch = records[start : start + CACHE_BATCH]
                items = await asyncio.to_thread(self._structures, batch)
                await self.committer.run(partial(_cache, folder_id, items))
        finally:
            self.filling.discard(folder_id)

    def _structures(self, records: list[store.MessageRecord]) -> list[tuple[int, store.CachedTexts]]:
        contents = self.blobs.get_many([record.blob_id for record in records])
        found = []
        for record in records:
            content = contents.get(record.blob_id)
            if content is None:
                continue  # expunged and swept meanwhile
            found.append((record.uid, cached_texts(record.prefix + content, len(record.prefix))))
        return found

    async def report_junk(
        self, account: ImapAccount, records: Sequence[store.MessageRecord], spam: bool
    ) -> None:
        async with self._learners:
            await self._report_junk(account, records, spam)

    async def _report_junk(
        self, account: ImapAccount, records: Sequence[store.MessageRecord], spam: bool
    ) -> None:
        kind = "junk" if spam else "not junk"
        for count, record in enumerate(records):
            result = "learned as spam" if spam else "learned as not spam"
            if self._learn is None:
                result = "not learned: this node has no spam engine that learns"
            elif count >= JUNK_REPORT_MOST:
                result = f"not learned: only the first {JUNK_REPORT_MOST} messages of one report are"
            else:
                content = await asyncio.to_thread(self.blobs.get, record.blob_id)
                try:
                    await self._learn(record.prefix + content, spam)
                except Exception as error:  # the engine is down: the report is traced as not learned
                    log.warning("IMAP %s report by %s not learned: %s", kind, account.address, error)
                    result = f"not learned: {error}"
            log.info("IMAP %s report by %s: uid %d %s", kind, account.address, record.uid, result)
            if record.trace_id:
                event = TraceEvent(
                    record.trace_id,
                    EventKind.JUNK_REPORT,
                    account.tenant_id,
                    account.address,
                    {"report": "junk" if spam else "not-junk", "by": account.address, "result": result},
                )
                await self.committer.run(partial(_record, event))


def _cache(folder_id: int, items: list[tuple[int, store.CachedTexts]], conn: Connection) -> None:
    for uid, texts in items:
        store.cache_structure(conn, folder_id, uid, texts.envelope, texts.bodystructure, texts.search_headers)


def _record(event: TraceEvent, conn: Connection) -> None:
    record_traced(conn, [event], time.time())


class NodeMailAccess:
    """One session's `MailAccess` over the node's services."""

    def __init__(self, endpoint: ImapEndpoint) -> None:
        self._endpoint = endpoint

    async def login(self, user: str, password: str, client: str) -> ImapAccount | LoginRefused:
        return await self._endpoint.login(user, password, client)

    async def read(self, job: Callable[[Connection], T]) -> T:
        database = self._endpoint.database

        def run() -> T:
            with database.read() as conn:
                return job(conn)

        return await asyncio.to_thread(run)

    async def write(self, job: Callable[[Connection], T]) -> T:
        return await self._endpoint.committer.run(job)

    async def store_blob(self, content: bytes) -> str:
        return await asyncio.to_thread(self._endpoint.blobs.put, content)

    async def message_bytes(
        self, records: Sequence[store.MessageRecord], *, header_only: bool
    ) -> list[bytes]:
        blobs = self._endpoint.blobs

        def read() -> list[bytes]:
            ids = [record.blob_id for record in records]
            found = blobs.head_many(ids, HEADER_OCTETS) if header_only else blobs.get_many(ids)
            # A blob missing was expunged and swept while the command ran: the message reads as empty.
            return [record.prefix + found.get(record.blob_id, b"") for record in records]

        return await asyncio.to_thread(read)

    def watch(self, mailbox_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        return self._endpoint.notifications.subscribe(store.change_topic(mailbox_id), lambda _: callback())

    def junk_report(self, account: ImapAccount, records: Sequence[store.MessageRecord], spam: bool) -> None:
        endpoint = self._endpoint
        endpoint.background(endpoint.report_junk(account, list(records), spam), "junk-report")

    def cache_structure(self, folder_id: int, records: Sequence[store.MessageRecord]) -> None:
        endpoint = self._endpoint
        if folder_id in endpoint.filling:
            return  # another session's FETCH is filling this folder's cache now
        endpoint.filling.add(folder_id)
        endpoint.background(endpoint.fill_cache(folder_id, list(records)), "structure-cache")


__all__ = ["ImapEndpoint", "NodeMailAccess"]
