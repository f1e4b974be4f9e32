"""The quarantine as administrators and recipients use it: a held message is listed, shown and
previewed; a release puts it in each recipient's Inbox stamped released (SFV:SKQ) and traced; who may
do what follows the message's quarantine policy (spec §10.6); delete and the purge of expired mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.directory import Directory
from postroom.mailstore import Mailstore
from postroom.model.flow import TraceStatus
from postroom.model.policy import ADMIN_ONLY, FULL_ACCESS
from postroom.model.scope import OPERATOR, TenantScope
from postroom.model.verdicts import EngineUnavailable
from postroom.quarantine import (
    QuarantineAccessError,
    QuarantineNotFoundError,
    QuarantineRequestError,
    QuarantineService,
    QuarantineUser,
    released_prefix,
)
from postroom.storage import BlobStore, Database, FileBlobStore
from postroom.storage.schema import quarantine
from postroom.trace import TraceService
from tests.support.quarantine import PREFIX, SPAM, held
from tests.support.records import Org, populate

NOW = 1_000_000.0
DAY = 86_400.0


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


class Learned:
    """The spam engine's learning, as an in-memory twin: what it was taught."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[bytes, bool]] = []
        self.error = error

    async def __call__(self, message: bytes, spam: bool) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append((message, spam))


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, blobs: BlobStore, clock: Clock) -> QuarantineService:
    return QuarantineService(database, blobs, clock)


def inbox(database: Database, blobs: BlobStore, mailbox_id: int) -> list[bytes]:
    store = Mailstore(database, blobs)
    return [store.export(OPERATOR, mailbox_id, m.uid) for m in store.list_messages(OPERATOR, mailbox_id)]


def test_a_held_message_is_listed_shown_previewed_and_traced(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    first = held(database, blobs, org.contoso, [("alice@contoso.com", org.alice)], at=NOW - 60)
    message_id = service.show(OPERATOR, first).message_id
    # The same message held again for the tenant (another recipient's policy): one row, both recipients.
    again = held(
        database,
        blobs,
        org.contoso,
        [("alice@contoso.com", org.alice), ("Bob@contoso.com", org.bob)],
        at=NOW - 60,
        message_id=message_id,
    )
    phish = held(
        database,
        blobs,
        org.contoso,
        [("bob@contoso.com", org.bob)],
        reason="phish",
        sender="x@phish.example",
        at=NOW,
    )
    assert again == first

    listed = service.list_messages(OPERATOR)
    assert [m.id for m in listed] == [phish, first]  # newest first
    shown = service.show(OPERATOR, first)
    assert (shown.reason, shown.policy, shown.access, shown.state) == (
        "high-confidence-spam",
        "Default",
        FULL_ACCESS,
        "held",
    )
    assert (shown.sender, shown.subject, shown.from_header) == (
        "win@prizes.example",
        "You won",
        "Prize Desk <win@prizes.example>",
    )
    assert shown.expires_at == NOW - 60 + 30 * DAY
    assert shown.detail["spam"] == {"scl": 9, "engine": "builtin"}
    assert [(r.recipient, r.mailbox_id, r.released_at) for r in shown.recipients] == [
        ("Bob@contoso.com", org.bob, None),
        ("alice@contoso.com", org.alice, None),
    ]

    def ids(**filters: object) -> list[int]:
        return [m.id for m in service.list_messages(OPERATOR, **filters)]  # type: ignore[arg-type]

    assert ids(reason="phish") == [phish]
    assert ids(recipient="ALICE@contoso.com") == [first]
    assert ids(recipient="*@contoso.com") == [phish, first]
    assert ids(sender="*@phish.example") == [phish]
    assert ids(since=NOW - 1) == [phish]
    assert ids(limit=1) == [phish]
    with pytest.raises(ValueError):
        service.list_messages(OPERATOR, reason="boring")

    preview = service.preview(OPERATOR, first)
    assert ("Subject", "You won") in preview.rendering.headers
    assert preview.rendering.text.strip() == "Claim your prize today."
    assert preview.rendering.source == "text/plain"

    trace = TraceService(database).detail(message_id, OPERATOR)
    assert trace is not None
    assert {(r.recipient, r.status) for r in trace.recipients} == {
        ("alice@contoso.com", TraceStatus.QUARANTINED),
        ("Bob@contoso.com", TraceStatus.QUARANTINED),
    }
    quarantined = [e for e in trace.events if e.event == "Quarantine"]
    assert [e.recipient for e in quarantined] == ["alice@contoso.com", "Bob@contoso.com"]
    assert quarantined[0].detail["reason"] == "high-confidence-spam"
    assert quarantined[0].detail["policy"] == "Default"
    assert quarantined[0].detail["quarantine"] == first


async def test_release_puts_the_message_in_each_inbox_stamped_and_traced(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    found = held(
        database,
        blobs,
        org.contoso,
        [("alice@contoso.com", org.alice), ("bob@contoso.com", org.bob)],
        at=NOW - 60,
    )
    released = await service.release(OPERATOR, found)
    assert released.delivered == ("alice@contoso.com", "bob@contoso.com")
    assert released.not_delivered == () and released.report == ""

    [copy] = inbox(database, blobs, org.alice)
    assert copy.endswith(SPAM)
    head = copy[: -len(SPAM)]
    assert head.startswith(
        b"Return-Path: <win@prizes.example>\r\nDelivered-To: alice@contoso.com\r\n"
        b"X-Postroom-Quarantine-Released: by operator; Mon, 12 Jan 1970 13:46:40 +0000\r\n"
    )
    assert b"SFV:SKQ;" in head and b"SFV:SPM" not in head
    assert b"CIP:192.0.2.7;" in head and b"CAT:HSPM;" in head  # the rest of the report stays
    assert Mailstore(database, blobs).list_messages(OPERATOR, org.alice)[0].subject == "You won"
    assert len(inbox(database, blobs, org.bob)) == 1

    shown = service.show(OPERATOR, found)
    assert shown.state == "released"
    assert {(r.released_at, r.released_by) for r in shown.recipients} == {(NOW, "operator")}
    trace = TraceService(database).detail(shown.message_id, OPERATOR)
    assert trace is not None
    assert {(r.recipient, r.status) for r in trace.recipients} == {
        ("alice@contoso.com", TraceStatus.DELIVERED),
        ("bob@contoso.com", TraceStatus.DELIVERED),
    }
    releases = [e for e in trace.events if e.event == "Release"]
    assert {(e.recipient, e.detail["action"], e.detail["by"]) for e in releases} == {
        ("alice@contoso.com", "released", "operator"),
        ("bob@contoso.com", "released", "operator"),
    }
    with pytest.raises(QuarantineRequestError, match="released to every recipient already"):
        await service.release(OPERATOR, found)


async def test_release_to_one_of_two_recipients(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService, clock: Clock
) -> None:
    found = held(
        database, blobs, org.contoso, [("alice@contoso.com", org.alice), ("bob@contoso.com", org.bob)]
    )
    released = await service.release(TenantScope(org.contoso), found, to=["BOB@contoso.com"])
    assert released.delivered == ("bob@contoso.com",)
    assert (len(inbox(database, blobs, org.alice)), len(inbox(database, blobs, org.bob))) == (0, 1)
    assert service.show(OPERATOR, found).state == "released to 1 of 2"
    assert b"by tenant administrator;" in inbox(database, blobs, org.bob)[0]

    with pytest.raises(QuarantineRequestError, match=r"released to bob@contoso\.com already"):
        await service.release(OPERATOR, found, to=["bob@contoso.com"])
    with pytest.raises(
        QuarantineRequestError, match=r"carol@fabrikam.com is not a recipient .* alice@contoso"
    ):
        await service.release(OPERATOR, found, to=["carol@fabrikam.com"])
    clock.now += 10
    assert (await service.release(OPERATOR, found)).delivered == ("alice@contoso.com",)
    assert len(inbox(database, blobs, org.alice)) == 1


async def test_a_recipient_without_a_mailbox_is_reported_and_stays_held(
    database: Database, directory: Directory, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    found = held(
        database,
        blobs,
        org.contoso,
        [("alice@contoso.com", org.alice), ("bob@contoso.com", org.bob), ("partner@contoso.com", None)],
    )
    directory.remove_recipient(OPERATOR, "bob@contoso.com")
    released = await service.release(OPERATOR, found)
    assert released.delivered == ("alice@contoso.com",)
    assert set(released.not_delivered) == {
        ("bob@contoso.com", "the mailbox no longer exists"),
        ("partner@contoso.com", "not a mailbox of this service"),
    }
    assert service.show(OPERATOR, found).state == "released to 1 of 3"


@pytest.mark.parametrize(
    ("reason", "access"),
    [
        ("malware", ADMIN_ONLY),
        ("file-type", ADMIN_ONLY),
        ("malware", FULL_ACCESS),  # admin-only whatever the row says
        ("spam", "SomeFuturePolicy"),  # an unknown policy is admin-only too (fail closed)
    ],
)
async def test_admin_only_mail_is_refused_to_its_recipient(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService, reason: str, access: str
) -> None:
    found = held(database, blobs, org.contoso, [("alice@contoso.com", org.alice)], reason=reason)
    if access != (ADMIN_ONLY if reason in ("malware", "file-type") else FULL_ACCESS):
        with database.write() as conn:
            conn.execute(quarantine.update().values(access=access))
    alice = QuarantineUser(org.alice, "alice@contoso.com")
    contoso = TenantScope(org.contoso)
    assert service.show(contoso, found, user=alice).admin_only  # she may see that it was held
    with pytest.raises(QuarantineAccessError, match="only an administrator of your organization can release"):
        await service.release(contoso, found, user=alice)
    with pytest.raises(QuarantineAccessError, match="only an administrator"):
        service.preview(contoso, found, user=alice)
    with pytest.raises(QuarantineAccessError, match="only an administrator"):
        service.delete(contoso, found, user=alice)
    with pytest.raises(QuarantineAccessError, match="cannot be requested"):
        service.request_release(contoso, found, alice)
    assert inbox(database, blobs, org.alice) == []
    assert (await service.release(contoso, found)).delivered == (
        "alice@contoso.com",
    )  # her administrator may


async def test_a_recipient_releases_and_deletes_only_their_own_copy(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    both = held(database, blobs, org.contoso, [("al@contoso.com", org.alice), ("bob@contoso.com", org.bob)])
    bobs = held(database, blobs, org.contoso, [("bob@contoso.com", org.bob)], at=2000.0)
    contoso = TenantScope(org.contoso)
    alice = QuarantineUser(org.alice, "alice@contoso.com")
    bob = QuarantineUser(org.bob, "bob@contoso.com")

    assert [m.id for m in service.list_messages(contoso, user=alice)] == [both]
    assert [r.recipient for r in service.show(contoso, both, user=alice).recipients] == ["al@contoso.com"]
    with pytest.raises(QuarantineNotFoundError):
        service.show(contoso, bobs, user=alice)  # not hers: as if it did not exist
    with pytest.raises(QuarantineNotFoundError):
        await service.release(contoso, bobs, user=alice)
    with pytest.raises(QuarantineRequestError, match="not a recipient"):
        await service.release(contoso, both, to=["bob@contoso.com"], user=alice)
    assert service.preview(contoso, both, user=alice).rendering.text.strip() == "Claim your prize today."
    with pytest.raises(QuarantineRequestError, match="release it instead"):
        service.request_release(contoso, both, alice)

    assert (await service.release(contoso, both, user=alice)).delivered == ("al@contoso.com",)
    assert b"by alice@contoso.com;" in inbox(database, blobs, org.alice)[0]
    assert inbox(database, blobs, org.bob) == []
    assert service.show(OPERATOR, both).state == "released to 1 of 2"

    assert service.delete(contoso, both, user=bob) == 1  # his copy only: hers stays listed
    assert [r.recipient for r in service.show(OPERATOR, both).recipients] == ["al@contoso.com"]
    assert service.delete(contoso, both, user=alice) == 1  # the last recipient: the message goes
    with pytest.raises(QuarantineNotFoundError):
        service.show(OPERATOR, both)


async def test_high_confidence_phish_its_recipient_may_only_request_release(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService, clock: Clock
) -> None:
    found = held(
        database, blobs, org.contoso, [("alice@contoso.com", org.alice)], reason="high-confidence-phish"
    )
    contoso = TenantScope(org.contoso)
    alice = QuarantineUser(org.alice, "alice@contoso.com")
    with pytest.raises(QuarantineAccessError, match="request its release instead"):
        await service.release(contoso, found, user=alice)
    assert service.request_release(contoso, found, alice) == 1
    assert service.request_release(contoso, found, alice) == 0  # asked already
    shown = service.show(contoso, found)
    assert shown.state == "release requested"
    assert shown.recipients[0].release_requested_at == NOW
    with pytest.raises(QuarantineRequestError, match="a recipient's"):
        service.request_release(contoso, found, None)

    clock.now += 60
    assert (await service.release(contoso, found)).delivered == ("alice@contoso.com",)
    with pytest.raises(QuarantineRequestError, match="released to you already"):
        service.request_release(contoso, found, alice)
    trace = TraceService(database).detail(shown.message_id, OPERATOR)
    assert trace is not None
    actions = [(e.detail["action"], e.detail["by"]) for e in trace.events if e.event == "Release"]
    assert actions == [("release-requested", "alice@contoso.com"), ("released", "tenant administrator")]


def test_delete_removes_the_message_and_traces_it(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    found = held(
        database, blobs, org.contoso, [("alice@contoso.com", org.alice), ("bob@contoso.com", org.bob)]
    )
    message_id = service.show(OPERATOR, found).message_id
    assert service.delete(TenantScope(org.contoso), found) == 2
    assert service.list_messages(OPERATOR) == []
    with pytest.raises(QuarantineNotFoundError):
        service.delete(OPERATOR, found)
    trace = TraceService(database).detail(message_id, OPERATOR)
    assert trace is not None
    deleted = [
        (e.recipient, e.detail["action"], e.detail["by"]) for e in trace.events if e.event == "Release"
    ]
    assert deleted == [
        ("alice@contoso.com", "deleted", "tenant administrator"),
        ("bob@contoso.com", "deleted", "tenant administrator"),
    ]


def test_purge_removes_only_expired_messages(
    database: Database, blobs: BlobStore, org: Org, service: QuarantineService
) -> None:
    expired = held(
        database, blobs, org.contoso, [("alice@contoso.com", org.alice)], at=NOW - 16 * DAY, retention_days=15
    )
    kept = held(
        database, blobs, org.contoso, [("bob@contoso.com", org.bob)], at=NOW - 16 * DAY, retention_days=30
    )
    clamped = held(
        database, blobs, org.fabrikam, [("carol@fabrikam.com", org.carol)], at=NOW - 2 * DAY, retention_days=0
    )
    assert service.show(OPERATOR, clamped).expires_at == NOW - DAY  # retention is 1-30 days
    message_id = service.show(OPERATOR, expired).message_id
    assert service.purge(batch=1) == 2
    assert [m.id for m in service.list_messages(OPERATOR)] == [kept]
    assert service.purge() == 0
    trace = TraceService(database).detail(message_id, OPERATOR)
    assert trace is not None
    assert [(e.recipient, e.detail["action"]) for e in trace.events if e.event == "Release"] == [
        ("alice@contoso.com", "expired")
    ]


@pytest.mark.parametrize(
    ("engine", "report", "taught"),
    [
        ("learns", "learned as not spam", True),
        ("none", "not learned: this node has no spam engine that learns", False),
        ("down", "not learned: rspamd: connection refused", False),
    ],
)
async def test_a_false_positive_report_teaches_the_spam_engine(
    database: Database,
    blobs: BlobStore,
    org: Org,
    clock: Clock,
    engine: str,
    report: str,
    taught: bool,
) -> None:
    learn = {
        "learns": Learned(),
        "none": None,
        "down": Learned(EngineUnavailable("rspamd", "connection refused")),
    }[engine]
    service = QuarantineService(database, blobs, clock, learn)
    found = held(database, blobs, org.contoso, [("alice@contoso.com", org.alice)])
    released = await service.release(OPERATOR, found, report_false_positive=True)
    assert released.delivered == ("alice@contoso.com",)  # the release stands whatever the engine did
    assert released.report == report
    if learn is not None:
        assert learn.calls == ([(PREFIX + SPAM, False)] if taught else [])
    trace = TraceService(database).detail(service.show(OPERATOR, found).message_id, OPERATOR)
    assert trace is not None
    [reported] = [e for e in trace.events if e.detail.get("action") == "reported-false-positive"]
    assert reported.detail["result"] == report


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            b"X-Postroom-Antispam-Report: SCL:5;SFV:SPM;CAT:SPM;\r\n",
            b"X-Postroom-Antispam-Report: SCL:5;SFV:SKQ;CAT:SPM;\r\n",
        ),
        (  # folded, SFV on the continuation line
            b"x-postroom-antispam-report: CIP:192.0.2.1;\r\n SFV:NSPM;\r\nReceived: x\r\n",
            b"x-postroom-antispam-report: CIP:192.0.2.1;\r\n SFV:SKQ;\r\nReceived: x\r\n",
        ),
        (b"X-Postroom-Antispam-Report: SCL:1;\r\n", b"X-Postroom-Antispam-Report: SCL:1;SFV:SKQ;\r\n"),
        (b"X-Postroom-Antispam-Report: SCL:1\r\n", b"X-Postroom-Antispam-Report: SCL:1;SFV:SKQ;\r\n"),
        (b"Received: x\r\n", b"Received: x\r\nX-Postroom-Antispam-Report: SFV:SKQ;\r\n"),
        (b"X-Other: XSFV:SPM;\r\n", b"X-Other: XSFV:SPM;\r\nX-Postroom-Antispam-Report: SFV:SKQ;\r\n"),
    ],
)
def test_the_released_copy_says_skq(prefix: bytes, expected: bytes) -> None:
    stamped = released_prefix(prefix, "admin\r\nBcc: x@evil.example", 0.0)
    stamp = (
        b"X-Postroom-Quarantine-Released: by admin\\r\\nBcc: x@evil.example; "
        b"Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )
    assert stamped == stamp + expected
