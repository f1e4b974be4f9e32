"""The admin listener's /healthz, /readyz and /metrics through a real HTTP client: who may ask, what each
answers; readiness from the node's real monitor over a real database and group committer (a stopped
writer, a writer that died, a database that does not answer)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from postroom.admin import AdminListener, Monitor, build_admin_app
from postroom.app.monitor import NodeMonitor
from postroom.config.settings import ListenAddress
from postroom.storage import Database, GroupCommitter
from tests.admin.client import Reply, request

TEXT = "text/plain; charset=utf-8"
EXPOSITION = b"# HELP postroom_up Up.\n# TYPE postroom_up gauge\npostroom_up 1.0\n"


@dataclass
class Twin:
    """A `Monitor` in memory: says what the test sets."""

    reason: str | None = None

    async def unready(self) -> str | None:
        return self.reason

    async def exposition(self) -> tuple[bytes, str]:
        return EXPOSITION, "text/plain; version=0.0.4; charset=utf-8"


Serve = Callable[..., Awaitable[int]]  # (monitor, allow=("127.0.0.1/32",)) -> the port it listens on


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    listeners: list[AdminListener] = []

    async def start(monitor: Monitor, allow: tuple[str, ...] = ("127.0.0.1/32",)) -> int:
        networks = tuple(ipaddress.ip_network(item) for item in allow)
        listener = AdminListener(
            build_admin_app(lambda _domain: None, monitor, networks), (ListenAddress("127.0.0.1", 0),)
        )
        await listener.start()
        listeners.append(listener)
        return listener.bound[0].port

    yield start
    for listener in listeners:
        await listener.stop(1)


async def get(port: int, path: str, source: str | None = None) -> Reply:
    return await asyncio.to_thread(request, port, ["node.postroom.test"], path, source=source)


async def test_health_readiness_and_metrics_answer_an_allowed_client(serve: Serve) -> None:
    twin = Twin()
    port = await serve(twin)
    assert await get(port, "/healthz") == Reply(200, TEXT, b"ok\n")
    assert await get(port, "/readyz") == Reply(200, TEXT, b"ready\n")
    scraped = await get(port, "/metrics")
    assert scraped.status == 200 and scraped.content_type is not None
    assert scraped.content_type.startswith("text/plain; version=0.0.4")
    [family] = text_string_to_metric_families(scraped.body.decode())
    assert family.name == "postroom_up"
    twin.reason = "draining: the node is stopping"
    assert await get(port, "/readyz") == Reply(503, TEXT, b"not ready: draining: the node is stopping\n")
    assert (await get(port, "/healthz")).status == 200


async def test_a_client_outside_metrics_allow_may_ask_only_whether_the_node_is_alive(serve: Serve) -> None:
    port = await serve(Twin())
    forbidden = Reply(403, TEXT, b"forbidden: your address is not in [admin] metrics_allow\n")
    assert await get(port, "/readyz", source="127.0.0.2") == forbidden
    assert await get(port, "/metrics", source="127.0.0.2") == forbidden
    assert await get(port, "/healthz", source="127.0.0.2") == Reply(200, TEXT, b"ok\n")


async def test_the_monitoring_paths_take_only_get(serve: Serve) -> None:
    port = await serve(Twin())
    for path in ("/healthz", "/readyz", "/metrics"):
        reply = await asyncio.to_thread(request, port, ["node.postroom.test"], path, method="POST")
        assert reply.status == 405


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'postroom.db'}")
    database.migrate()
    return database


async def test_the_node_is_ready_while_its_database_answers_and_its_writer_runs(
    serve: Serve, database: Database
) -> None:
    committer = GroupCommitter(database)
    committer.start()
    monitor = NodeMonitor(database, committer)
    port = await serve(monitor)
    assert await get(port, "/readyz") == Reply(200, TEXT, b"ready\n")
    monitor.draining = True
    assert await get(port, "/readyz") == Reply(503, TEXT, b"not ready: draining: the node is stopping\n")
    monitor.draining = False
    await asyncio.to_thread(committer.stop)
    not_running = Reply(503, TEXT, b"not ready: the writer is not running: nothing can be committed\n")
    assert await get(port, "/readyz") == not_running


def _kills_the_writer(_conn: object) -> None:
    raise SystemExit("a job that ends the writer thread")


async def test_a_writer_that_died_makes_the_node_unready(serve: Serve, database: Database) -> None:
    committer = GroupCommitter(database)
    committer.start()
    port = await serve(NodeMonitor(database, committer))
    assert (await get(port, "/readyz")).status == 200
    with pytest.raises(BaseException):  # noqa: B017  the writer answers with what killed it
        await committer.run(_kills_the_writer)
    reply = await get(port, "/readyz")
    assert (reply.status, reply.body) == (
        503,
        b"not ready: the writer is not running: nothing can be committed\n",
    )
    database.dispose()


async def test_a_database_that_does_not_answer_makes_the_node_unready(
    serve: Serve, database: Database, unused_tcp_port: int
) -> None:
    committer = GroupCommitter(database)
    committer.start()
    gone = Database(f"postgresql+psycopg://postroom@127.0.0.1:{unused_tcp_port}/test")
    port = await serve(NodeMonitor(gone, committer))
    reply = await get(port, "/readyz")
    assert (reply.status, reply.body) == (503, b"not ready: the database does not answer\n")
    await asyncio.to_thread(committer.stop)
