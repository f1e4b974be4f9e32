"""The local notification channel (SQLite: processes sharing one data directory): two real processes
exchange notifications both ways, a CLI-like publisher's notification arrives before it exits, and
the socket of a process killed with -9 is removed by the next publisher."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.cluster import DIRECTORY, QUEUE, LocalChannel, Notifications
from tests.conftest import wait_for

# A peer process: listens on the channel, prints each notification it gets, publishes on request.
PEER = """
import asyncio, sys
from pathlib import Path
from postroom.cluster import LocalChannel, Notifications

notifications = Notifications(LocalChannel(Path(sys.argv[1])))

async def main() -> None:
    loop = asyncio.get_running_loop()
    def got(topic):
        return lambda payload: print(topic, payload, flush=True)
    notifications.subscribe("directory", got("directory"))
    notifications.subscribe("queue", got("queue"))
    listening = asyncio.create_task(notifications.listen())
    while not notifications.listening.is_set():
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        topic, _, payload = line.strip().partition(" ")
        notifications.publish(topic, payload)
    listening.cancel()

asyncio.run(main())
notifications.close()
"""


class Listener:
    """This test process's own listening side, on an event loop in a thread."""

    def __init__(self, directory: Path) -> None:
        self.notifications = Notifications(LocalChannel(directory))
        self.received: list[tuple[str, str | None]] = []
        for topic in (DIRECTORY, QUEUE):
            self.notifications.subscribe(
                topic, lambda payload, topic=topic: self.received.append((topic, payload))
            )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.notifications.listen(), self.loop)
        assert self.notifications.listening.wait(5)

    def close(self) -> None:
        self.task.cancel()
        wait_for(lambda: not self.notifications.listening.is_set())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.notifications.close()


@pytest.fixture
def channel_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "run" / "notify"


@pytest.fixture
def peer(channel_dir: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", PEER, str(channel_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_two_processes_on_one_data_dir_exchange_notifications(
    channel_dir: Path, peer: subprocess.Popen[str]
) -> None:
    assert peer.stdin is not None and peer.stdout is not None
    listener = Listener(channel_dir)
    try:
        # This process publishes (as the writer thread or a CLI command would): the peer hears it.
        publisher = Notifications(LocalChannel(channel_dir))
        publisher.publish(DIRECTORY, "generation 7")
        publisher.close()  # a CLI command's notification is sent before it exits
        assert peer.stdout.readline().strip() == "directory generation 7"
        wait_for(lambda: (DIRECTORY, "generation 7") in listener.received, timeout=2)

        # The peer publishes: this process hears it (and the peer hears itself: every process).
        peer.stdin.write("queue\n")
        peer.stdin.flush()
        wait_for(lambda: (QUEUE, "") in listener.received, timeout=2)
        assert peer.stdout.readline().strip() == "queue"
        assert len(os.listdir(channel_dir)) == 2  # one socket per listening process, none for publishers
    finally:
        listener.close()
    assert len(os.listdir(channel_dir)) == 1, "a process that stops listening removes its socket"


def test_a_killed_peers_socket_is_removed_by_the_next_publisher(
    channel_dir: Path, peer: subprocess.Popen[str]
) -> None:
    [socket_name] = os.listdir(channel_dir)
    assert socket_name.startswith(f"{peer.pid}-")
    peer.send_signal(signal.SIGKILL)
    peer.wait(10)
    assert os.listdir(channel_dir) == [socket_name]  # nobody cleaned up after it
    publisher = Notifications(LocalChannel(channel_dir))
    publisher.publish(QUEUE)
    publisher.close()
    assert os.listdir(channel_dir) == []


def test_nothing_listens_yet_publishing_is_a_no_op(tmp_path: Path) -> None:
    publisher = Notifications(LocalChannel(tmp_path / "nobody" / "run" / "notify"))
    publisher.publish(DIRECTORY)
    publisher.close()
    assert not (tmp_path / "nobody").exists()  # a CLI command creates nothing


@pytest.mark.parametrize("topic", ["", "two words", "line\nbreak"])
def test_a_topic_is_one_word(tmp_path: Path, topic: str) -> None:
    with pytest.raises(ValueError):
        Notifications(LocalChannel(tmp_path)).publish(topic)
