"""Golden messages: each `.eml` in `messages/` goes through the real MX endpoint; what is stored,
listed and traced must match `expected.json`, and the stored body must be the file byte for byte.
"""

from __future__ import annotations

import json
import smtplib
from pathlib import Path
from typing import Any

import pytest

from postroom.model.scope import OPERATOR
from postroom.trace import TraceQuery
from tests.conftest import Hosted, wait_for
from tests.support.node import RunningNode
from tests.support.records import exported, stored_messages

HERE = Path(__file__).parent
EXPECTED: dict[str, dict[str, Any]] = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))


def test_every_golden_message_has_expectations() -> None:
    assert sorted(p.name for p in (HERE / "messages").glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_message(hosted: Hosted, mx_node: RunningNode, name: str) -> None:
    expected = EXPECTED[name]
    content = (HERE / "messages" / name).read_bytes()
    with smtplib.SMTP(*mx_node.mx) as client:
        client.ehlo("mta.partner.example")
        assert client.mail("sender@partner.example", ["BODY=8BITMIME"])[0] == 250
        for rcpt in expected["rcpt"]:
            assert client.rcpt(rcpt)[0] == 250
        code, reply = client.data(content)
        assert code == 250, reply
    mailstore, directory = hosted.app.mailstore, hosted.app.directory

    def stored() -> int:
        return sum(len(stored_messages(directory, mailstore, a)) for a in expected["delivered_to"])

    wait_for(lambda: stored() == len(expected["delivered_to"]))
    for address in expected["delivered_to"]:
        [listed] = stored_messages(directory, mailstore, address)
        assert (listed.subject, listed.from_header, listed.message_id) == (
            expected["subject"],
            expected["from"],
            expected["message_id"],
        )
        raw = exported(directory, mailstore, address, listed.uid)
        assert raw.endswith(content), "the message is stored byte for byte as sent"
        added = raw[: len(raw) - len(content)]
        assert added.startswith(b"Return-Path: <sender@partner.example>\r\nDelivered-To: ")
        assert added.count(b"Received: ") == 1
    rows = hosted.app.trace.search(TraceQuery(sender="sender@partner.example"), OPERATOR)
    assert {r.recipient: r.status.value for r in rows} == expected["trace"]
