"""Removing a tenant removes its data; a tenant made again with the same names starts empty.

From the outside: mail over SMTP to a running node, then the `postroom` command as an operator runs
it, then the services. The new tenant reuses the removed tenant's name, domain and mailbox name.
"""

from __future__ import annotations

import json
import smtplib

from sqlalchemy import select

from postroom.app import App
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import BlobMissingError
from postroom.storage.schema import messages
from postroom.trace import TraceQuery
from tests.cli.test_commands import postroom
from tests.conftest import Hosted, wait_for
from tests.support.node import RunningNode
from tests.support.records import stored_messages

MESSAGE = b"From: dan@partner.example\r\nTo: carol@fabrikam.com\r\nSubject: only for fabrikam\r\n\r\nhi\r\n"


def _held(app: App, blob_id: str) -> bool:
    """Whether the node's blob store holds the blob (a file, or rows for a small message)."""
    try:
        app.blobs.head(blob_id, 1)
    except BlobMissingError:
        return False
    return True


def test_a_removed_tenant_leaves_nothing_to_a_new_tenant_of_the_same_names(
    hosted: Hosted, mx_node: RunningNode
) -> None:
    app, config = hosted.app, hosted.settings.source
    with smtplib.SMTP(*mx_node.mx) as client:
        client.sendmail("dan@partner.example", ["carol@fabrikam.com"], MESSAGE)
    wait_for(lambda: len(stored_messages(app.directory, app.mailstore, "carol@fabrikam.com")) == 1)
    old = app.directory.get_tenant(OPERATOR, "fabrikam")
    [old_row] = app.trace.search(TraceQuery(), TenantScope(old.id))
    with app.database.read() as conn:
        blob_id = conn.execute(select(messages.c.blob_id)).scalar_one()
    assert _held(app, blob_id)

    asked = postroom("tenant", "remove", "fabrikam", config=config)
    assert asked.returncode == 2
    for count in ("3 domain(s)", "1 recipient(s)", "1 stored message(s)", "trace of 1 message(s)"):
        assert count in asked.stderr
    assert "1 message file(s)" in asked.stderr and "--yes" in asked.stderr
    assert _held(app, blob_id), "asking removes nothing"

    removed = postroom("tenant", "remove", "fabrikam", "--yes", config=config)
    assert removed.returncode == 0, removed.stderr
    assert "1 stored message(s)" in removed.stdout
    assert not _held(app, blob_id), "the message content no one else uses is gone"

    for command in (
        ["tenant", "add", "fabrikam"],
        ["domain", "add", "fabrikam.com", "--tenant", "fabrikam", "--verified"],
        ["mailbox", "add", "carol@fabrikam.com"],
    ):
        result = postroom(*command, config=config)
        assert result.returncode == 0, result.stderr
    new = app.directory.get_tenant(OPERATOR, "fabrikam")
    assert new.id != old.id, "a tenant id is never reused"

    # The CLI, as the operator narrowed to the new tenant.
    searched = postroom("trace", "--tenant", "fabrikam", "--json", config=config)
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout) == []
    shown = postroom("trace", "show", old_row.message_id, "--tenant", "fabrikam", config=config)
    assert shown.returncode != 0 and "no traced message" in shown.stderr
    listed = postroom("mailbox", "messages", "carol@fabrikam.com", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []

    # The services, as a fresh process sees them.
    fresh = App.open(hosted.settings)
    try:
        assert fresh.trace.search(TraceQuery(), TenantScope(new.id)) == []
        assert fresh.trace.detail(old_row.message_id, TenantScope(new.id)) is None
        carol = fresh.directory.get_recipient(TenantScope(new.id), "carol@fabrikam.com")
        assert fresh.mailstore.list_messages(TenantScope(new.id), carol.id) == []
        assert (
            fresh.trace.search(TraceQuery(sender="dan@partner.example"), OPERATOR) == []
        )  # the operator: gone
    finally:
        fresh.close()
