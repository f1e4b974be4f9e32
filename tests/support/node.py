"""A real Postroom node for tests: set up in a temp directory, serving in a background thread.

The node is the production code path (`postroom init` equivalent, `App.serve`) on 127.0.0.1 with
ephemeral ports; tests talk to it with real clients (smtplib, swaks, raw sockets).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from postroom.app import App, InitOptions, Listening, init_node
from postroom.config import ListenAddress, Settings, SmtpLimits, load_settings


def make_node(directory: Path, *, nameservers: tuple[str, ...] = (), protection: bool = False) -> Settings:
    """A node set up in `directory` on ephemeral loopback ports.

    The filtering stack is on in every real node (`postroom init`); here it is off unless a test asks
    for it (`protection=True`, with the loopback DNS server as `nameservers`): the tests of routing,
    delivery and trace send bare messages from domains no DNS knows, which the stack would rightly
    judge, and must not depend on the machine's resolver. Protection has its own suites."""
    settings = init_node(
        directory,
        InitOptions(
            service_domain="postroom.test",
            mx_listen="127.0.0.1:0",
            submission_listen="127.0.0.1:0",
            submission_tls_listen="127.0.0.1:0",
            imap_listen="127.0.0.1:0",
            imap_tls_listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            nameservers=nameservers,
        ),
    )
    if protection:
        return settings
    text = settings.source.read_text(encoding="utf-8")
    head, table, rest = text.partition("\n[protection]\n")
    assert table, "postroom init writes a [protection] table"
    settings.source.write_text(head + table + rest.replace("enabled = true", "enabled = false", 1), "utf-8")
    return load_settings(settings.source)


def with_limits(settings: Settings, **limits: object) -> Settings:
    new_limits = replace(settings.mx.limits, **limits)  # type: ignore[arg-type]
    assert isinstance(new_limits, SmtpLimits)
    return replace(settings, mx=replace(settings.mx, limits=new_limits))


class RunningNode:
    """`App.serve` on its own event loop in a thread; `mx` is the bound MX address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App.open(settings)
        self._ready = threading.Event()
        self._listening: list[Listening] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="postroom-node", daemon=True)

    def _run(self) -> None:
        try:
            self.app.run(self._on_ready)
        except BaseException as error:  # reported to the test by start()/stop()
            self._error = error
            self._ready.set()

    def _on_ready(self, listening: list[Listening]) -> None:
        self._listening = listening
        self._ready.set()

    def start(self) -> RunningNode:
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("the node did not start within 20 s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def mx(self) -> tuple[str, int]:
        return self.address("mx")

    @property
    def listening(self) -> list[Listening]:
        """What the node reported when ready: each listener's name, address and protocol."""
        return list(self._listening)

    def address(self, listener: str) -> tuple[str, int]:
        """The (host, port) the named listener ("mx", "admin") is bound to."""
        address = next(item.address for item in self._listening if item.name == listener)
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.app.stop()
        self._thread.join(60)
        self.app.close()
        if self._error is not None:
            raise self._error


@contextmanager
def running(settings: Settings) -> Iterator[RunningNode]:
    node = RunningNode(settings).start()
    try:
        yield node
    finally:
        node.stop()


def reload(settings: Settings) -> Settings:
    return load_settings(settings.source)


__all__ = ["ListenAddress", "RunningNode", "make_node", "reload", "running", "with_limits"]
