"""An inspection applied to a message's routes: what goes on, what is held, deleted, refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from postroom.app.filtering import apply_inspection, hold_copies, prepend_subject
from postroom.directory import Directory
from postroom.mailstore import Mailstore
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceStatus
from postroom.model.message import summarize
from postroom.model.policy import FULL_ACCESS
from postroom.model.scope import OPERATOR, TenantScope
from postroom.model.verdicts import FilterAction, FilterVerdict
from postroom.protection.pipeline import POLICY_REJECTED, Disposition, Inspection
from postroom.quarantine import QuarantineService
from postroom.queue import SpoolEntry
from postroom.storage import Database, FileBlobStore
from postroom.trace import TraceMessage, TraceService, record_events, record_message, set_statuses
from tests.support.records import populate


def route(address: str, tenant: int = 1) -> RoutedRecipient:
    return RoutedRecipient(address, address, tenant, Route.LOCAL, mailbox_id=hash(address) % 1000)


def disposition(action: FilterAction, verdict: FilterVerdict = FilterVerdict.SPAM) -> Disposition:
    reply = POLICY_REJECTED if action is FilterAction.REJECT else None
    return Disposition(action, verdict, b"X-Report: 1\r\n", "SPM", 6, "Default", reply=reply)


def test_each_route_takes_its_own_disposition() -> None:
    routes = [route("a@x.test"), route("b@x.test"), route("c@x.test"), route("d@x.test")]
    inspection = Inspection(
        dispositions=(
            disposition(FilterAction.INBOX, FilterVerdict.CLEAN),
            disposition(FilterAction.JUNK),
            disposition(FilterAction.QUARANTINE),
            disposition(FilterAction.DELETE),
        ),
        detail={"scl": 6},
    )
    filtered = apply_inspection("m1", inspection, routes)
    assert [(r.recipient, r.folder) for r in filtered.routes] == [("a@x.test", "Inbox"), ("b@x.test", "Junk")]
    assert all(r.headers == b"X-Report: 1\r\n" for r in filtered.routes)
    assert [h.route.recipient for h in filtered.held] == ["c@x.test"]
    assert [(s.recipient, s.status) for s in filtered.statuses] == [
        ("d@x.test", TraceStatus.FILTERED_AS_SPAM)
    ]
    message_events = [e for e in filtered.events if not e.recipient]
    assert len(message_events) == 1 and message_events[0].event is EventKind.FILTER
    assert message_events[0].detail["actions"] == {"delete": 1, "inbox": 1, "junk": 1, "quarantine": 1}
    assert {e.recipient for e in filtered.events if e.recipient} == {"b@x.test", "c@x.test", "d@x.test"}
    assert filtered.refusal is None


def test_a_message_every_recipient_rejects_is_refused_at_data() -> None:
    routes = [route("a@x.test"), route("b@y.test", tenant=2)]
    reject = disposition(FilterAction.REJECT)
    filtered = apply_inspection("m2", Inspection(dispositions=(reject, reject)), routes)
    assert filtered.refusal == POLICY_REJECTED


def test_a_partial_reject_fails_only_that_route_for_its_ndr() -> None:
    routes = [route("a@x.test"), route("b@y.test", tenant=2)]
    inspection = Inspection(
        dispositions=(disposition(FilterAction.REJECT), disposition(FilterAction.INBOX, FilterVerdict.CLEAN))
    )
    filtered = apply_inspection("m3", inspection, routes)
    assert filtered.refusal is None
    assert [(r.recipient, bool(r.failure)) for r in filtered.routes] == [
        ("a@x.test", True),
        ("b@y.test", False),
    ]
    assert {e.tenant_id for e in filtered.events if not e.recipient} == {1, 2}


def test_a_copy_of_no_tenant_is_refused_not_held() -> None:
    """No one could release it: the service postmaster's copy of malware is refused with an NDR."""
    routes = [RoutedRecipient("postmaster@postroom.test", "postmaster@postroom.test", None, Route.LOCAL, 7)]
    filtered = apply_inspection(
        "m4", Inspection(dispositions=(disposition(FilterAction.QUARANTINE, FilterVerdict.MALWARE),)), routes
    )
    assert filtered.held == [] and filtered.refusal is not None and filtered.refusal.enhanced == "5.7.1"


def test_prepend_subject_touches_only_the_subject() -> None:
    message = b"From: a@x.test\r\nSubject: Hello\r\n\r\nSubject: not a header\r\n"
    assert prepend_subject(message, "[SPAM] ") == (
        b"From: a@x.test\r\nSubject: [SPAM] Hello\r\n\r\nSubject: not a header\r\n"
    )
    assert prepend_subject(b"From: a@x.test\r\n\r\nbody\r\n", "[SPAM] ") == (
        b"Subject: [SPAM]\r\nFrom: a@x.test\r\n\r\nbody\r\n"
    )


async def test_held_copies_go_into_quarantine_one_row_per_tenant(
    database: Database, directory: Directory, tmp_path: Path
) -> None:
    org = populate(directory)
    blobs = FileBlobStore(tmp_path / "blobs")
    content = b"From: x@phish.example\r\nSubject: Verify\r\n\r\nclick\r\n"
    received = b"Received: from client by mx.postroom.test\r\n"
    size = len(received) + len(content)
    entry = SpoolEntry(
        "m9", "x@phish.example", blobs.put(content), received, size, 5000.0, summarize(content)
    )
    phish = replace(
        disposition(FilterAction.QUARANTINE, FilterVerdict.PHISH),
        headers=b"X-Postroom-Antispam-Report: SCL:6;SFV:SPM;CAT:PHSH;\r\n",
        quarantine_reason="phish",
        access=FULL_ACCESS,
        retention_days=15,
    )
    alice = RoutedRecipient(
        "alice@contoso.com",
        "al@contoso.com",
        org.contoso,
        Route.LOCAL,
        org.alice,
        also_settles=("ALICE@contoso.com",),
    )
    bob = RoutedRecipient("bob@contoso.com", "bob@contoso.com", org.contoso, Route.LOCAL, org.bob)
    carol = RoutedRecipient("carol@fabrikam.com", "carol@fabrikam.com", org.fabrikam, Route.LOCAL, org.carol)
    filtered = apply_inspection(
        "m9", Inspection(dispositions=(phish, phish, phish), detail={"dmarc": "fail"}), [alice, bob, carol]
    )
    with database.write() as conn:
        record_message(conn, TraceMessage("m9", "", entry.sender, "Verify", entry.size, "192.0.2.9", 5000.0))
        events, statuses = hold_copies(conn, entry, filtered.held, filtered.detail)
        record_events(conn, events, 5000.0)
        set_statuses(conn, statuses, 5000.0)

    service = QuarantineService(database, blobs)
    contoso, fabrikam = (
        service.list_messages(TenantScope(org.contoso)),
        service.list_messages(TenantScope(org.fabrikam)),
    )
    assert len(contoso) == len(fabrikam) == 1
    held = contoso[0]
    assert [(r.recipient, r.mailbox_id) for r in held.recipients] == [
        ("al@contoso.com", org.alice),
        ("bob@contoso.com", org.bob),
    ]
    assert (held.reason, held.access, held.policy, held.expires_at) == (
        "phish",
        FULL_ACCESS,
        "Default",
        5000.0 + 15 * 86400,
    )
    assert held.detail == {"dmarc": "fail", "verdict": "phish", "scl": 6, "sfv": "SPM"}
    trace = TraceService(database).detail("m9", OPERATOR)
    assert trace is not None
    assert {r.recipient: r.status for r in trace.recipients} == dict.fromkeys(
        ["al@contoso.com", "ALICE@contoso.com", "bob@contoso.com", "carol@fabrikam.com"],
        TraceStatus.QUARANTINED,
    )

    await service.release(TenantScope(org.contoso), held.id, to=["al@contoso.com"])
    store = Mailstore(database, blobs)
    [copy] = store.list_messages(OPERATOR, org.alice)
    exported = store.export(OPERATOR, org.alice, copy.uid)
    # its protection headers (the verdict now SKQ), then those the node added on receipt, then the body
    assert exported.endswith(b"X-Postroom-Antispam-Report: SCL:6;SFV:SKQ;CAT:PHSH;\r\n" + received + content)
