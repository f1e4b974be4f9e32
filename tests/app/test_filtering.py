"""An inspection applied to a message's routes: what goes on, what is held, deleted, refused."""

from __future__ import annotations

from postroom.app.filtering import apply_inspection, prepend_subject
from postroom.model.flow import EventKind, Route, RoutedRecipient, TraceStatus
from postroom.model.verdicts import FilterAction, FilterVerdict
from postroom.protection.pipeline import POLICY_REJECTED, Disposition, Inspection


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


def test_prepend_subject_touches_only_the_subject() -> None:
    message = b"From: a@x.test\r\nSubject: Hello\r\n\r\nSubject: not a header\r\n"
    assert prepend_subject(message, "[SPAM] ") == (
        b"From: a@x.test\r\nSubject: [SPAM] Hello\r\n\r\nSubject: not a header\r\n"
    )
    assert prepend_subject(b"From: a@x.test\r\n\r\nbody\r\n", "[SPAM] ") == (
        b"Subject: [SPAM]\r\nFrom: a@x.test\r\n\r\nbody\r\n"
    )
