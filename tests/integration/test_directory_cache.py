"""The node's directory cache on the MX path: no SQL on the event loop, and a change in force within a
second on a running node."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from pathlib import Path

from sqlalchemy import event

from postroom.app.mx import MxEndpoint
from postroom.directory import CachedDirectory, Directory
from postroom.model import Address
from postroom.model.flow import Route
from postroom.model.scope import OPERATOR
from postroom.routing import Accepted
from postroom.storage import Database, FileBlobStore, GroupCommitter
from postroom.trace.refusals import RefusalLimits
from tests.conftest import Hosted
from tests.support.node import RunningNode
from tests.support.records import populate


def test_no_sql_runs_on_the_event_loop(database: Database, directory: Directory, tmp_path: Path) -> None:
    populate(directory)
    directory.set_external_senders(OPERATOR, "team@contoso.com", True)
    cache = CachedDirectory(database)
    cache.refresh()
    endpoint = MxEndpoint(
        hostname="mx.postroom.test",
        directory=cache,
        database=database,
        blobs=FileBlobStore(tmp_path / "blobs"),
        committer=GroupCommitter(database),
        on_queued=lambda: None,
        max_expanded_recipients=10_000,
        max_receive_size=37_748_736,
        refusal_limits=RefusalLimits(20, 100, 3600.0),
    )
    query_threads: list[int] = []
    event.listen(
        database.read_engine, "before_cursor_execute", lambda *_: query_threads.append(threading.get_ident())
    )

    async def session() -> int:
        loop = asyncio.get_running_loop()
        alice = await endpoint.resolve(Address.parse("alice@contoso.com"), None)  # a miss: in a worker
        again = await endpoint.resolve(Address.parse("alice@contoso.com"), None)  # a hit: from memory
        team = await endpoint.resolve(Address.parse("team@contoso.com"), None)
        assert isinstance(alice, Accepted) and again == alice and isinstance(team, Accepted)
        # Between RCPT and DATA a directory change drops alice's cached answer.
        await loop.run_in_executor(
            None,
            lambda: directory.set_recipient(OPERATOR, "alice@contoso.com", add_aliases=["a2@contoso.com"]),
        )
        await loop.run_in_executor(None, cache.refresh)
        mailbox_only = await endpoint.categorize("m-1", [alice])
        with_group = await endpoint.categorize("m-2", [team])
        assert [r.route for r in mailbox_only.routes] == [Route.LOCAL]
        assert sorted(r.recipient for r in with_group.routes) == ["alice@contoso.com", "bob@contoso.com"]
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(session())
    finally:
        endpoint.close()
    assert query_threads, "the misses were answered by the database"
    assert loop_thread not in query_threads, "no query ran on the event loop"


def rcpt_reply(node: RunningNode, recipient: str) -> int:
    with smtplib.SMTP(*node.mx) as client:
        client.ehlo("mta.partner.example")
        client.mail("dan@partner.example")
        code, _ = client.rcpt(recipient)
        return code


def test_a_running_node_sees_a_new_address_within_a_second(hosted: Hosted, mx_node: RunningNode) -> None:
    assert rcpt_reply(mx_node, "alice@contoso.com") == 250  # cached now
    assert rcpt_reply(mx_node, "newcomer@contoso.com") == 550  # cached as unknown
    hosted.app.directory.add_mailbox(OPERATOR, "newcomer@contoso.com")
    added = time.monotonic()
    while rcpt_reply(mx_node, "newcomer@contoso.com") != 250:
        assert time.monotonic() - added < 3.0, "the node still refuses the new address"
        time.sleep(0.05)
    assert rcpt_reply(mx_node, "alice@contoso.com") == 250
