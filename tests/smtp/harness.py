"""Loopback harness for the SMTP room: a running listener and a byte-level SMTP client."""

from __future__ import annotations

import asyncio
import re
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from postroom.config.settings import ListenAddress, SmtpLimits
from postroom.smtp import AuthPolicy, ClientCertificates, MemoryBudget, SmtpListener, TrustedProxies

from .twin import MemoryPostOffice

HOSTNAME = "mx.postroom.test"
_FINAL_LINE = re.compile(rb"(\d{3}) (?:(\d\.\d{1,3}\.\d{1,3}) )?.*\r\n")


@asynccontextmanager
async def serving(
    office: MemoryPostOffice,
    limits: SmtpLimits | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    grace: float = 1.0,
    memory_budget: int = 268_435_456,
    auth: AuthPolicy | None = None,
    proxies: TrustedProxies | None = None,
    client_certificates: ClientCertificates | None = None,
) -> AsyncIterator[SmtpListener]:
    """A listener on 127.0.0.1, port 0, serving `office`, spooling into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="postroom-spool-") as spool_dir:
        listener = SmtpListener(
            "mx",
            (ListenAddress("127.0.0.1", 0),),
            limits or SmtpLimits(),
            HOSTNAME,
            office,
            ssl_context=ssl_context,
            implicit_tls=implicit_tls,
            spool_dir=Path(spool_dir),
            memory=MemoryBudget(memory_budget),
            auth=auth,
            proxies=proxies,
            client_certificates=client_certificates,
        )
        await listener.start()
        try:
            yield listener
        finally:
            await listener.stop(grace)


class RawClient:
    """A byte-level SMTP client: writes exactly what a test says, reads replies as (code, enhanced)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, listener: SmtpListener, source: str | None = None) -> RawClient:
        """Connect to the listener, from the loopback address `source` when given (127.0.0.2, ...)."""
        address = listener.bound[0]
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(address.host, address.port, local_addr=local)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 5.0) -> tuple[int, str | None]:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("the server closed the connection")
            match = _FINAL_LINE.fullmatch(line)
            if match:
                enhanced = match.group(2).decode() if match.group(2) else None
                return int(match.group(1)), enhanced

    async def replies(self, count: int) -> list[tuple[int, str | None]]:
        return [await self.reply() for _ in range(count)]

    async def at_eof(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


class ServingThread:
    """A listener served by its own event loop in a thread, so a module's (blocking, smtplib) tests can
    share one: `with ServingThread(office, ...) as listener:`; the keywords are those of `serving`."""

    def __init__(self, office: MemoryPostOffice, **options: Any) -> None:
        self._office = office
        self._options = options
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listener: SmtpListener | None = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with serving(self._office, **self._options) as listener:
                self._listener = listener
                self._started.set()
                await self._stop.wait()
        finally:
            self._started.set()

    def __enter__(self) -> SmtpListener:
        self._thread.start()
        self._started.wait(10)
        if self._listener is None:
            raise RuntimeError("the listener did not start")
        return self._listener

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
