"""The MX endpoint when the node's writer is gone: mail is refused with 421 4.3.0, never left hanging."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest
from sqlalchemy import Connection

from postroom.app.mx import MxEndpoint
from postroom.config import ListenAddress, SmtpLimits
from postroom.directory import CachedDirectory
from postroom.smtp import MemoryBudget, SmtpListener
from postroom.storage import Database, FileBlobStore, GroupCommitter
from postroom.trace.refusals import RefusalLimits


class WriterKilled(BaseException):
    """Escapes the writer thread: the writer dies."""


def kill(conn: Connection) -> None:
    raise WriterKilled("the disk went away")


def smtp_exchange(address: tuple[str, int]) -> tuple[int, bytes]:
    """Connect and, if greeted, say EHLO and MAIL; the first refusal seen."""
    smtp = smtplib.SMTP(timeout=10)
    code, text = smtp.connect(*address)
    if code == 220:
        smtp.ehlo("client.example")
        code, text = smtp.mail("someone@partner.example")
    smtp.close()
    return code, text


@pytest.mark.parametrize("dies", ["before the connection", "during the session"])
async def test_a_dead_writer_refuses_mail_with_421(database: Database, tmp_path: Path, dies: str) -> None:
    committer = GroupCommitter(database)
    committer.start()
    endpoint = MxEndpoint(
        hostname="mx.postroom.test",
        directory=CachedDirectory(database),
        database=database,
        blobs=FileBlobStore(tmp_path / "blobs"),
        committer=committer,
        on_queued=lambda: None,
        max_expanded_recipients=10_000,
        max_receive_size=37_748_736,
        refusal_limits=RefusalLimits(per_session=20, per_client=100, window=3600.0),
    )
    listener = SmtpListener(
        name="mx",
        addresses=(ListenAddress("127.0.0.1", 0),),
        limits=SmtpLimits(),
        hostname="mx.postroom.test",
        factory=endpoint.session,
        ssl_context=None,
        spool_dir=tmp_path / "incoming",
        memory=MemoryBudget(1 << 28),
    )
    (address,) = await listener.start()
    try:
        if dies == "before the connection":
            with pytest.raises(Exception, match="the disk went away"):
                await asyncio.wait_for(committer.run(kill), 10)
            code, text = await asyncio.to_thread(smtp_exchange, (address.host, address.port))
        else:
            smtp = smtplib.SMTP(timeout=10)
            assert (await asyncio.to_thread(smtp.connect, address.host, address.port))[0] == 220
            await asyncio.to_thread(smtp.ehlo, "client.example")
            with pytest.raises(Exception, match="the disk went away"):
                await asyncio.wait_for(committer.run(kill), 10)
            code, text = await asyncio.to_thread(smtp.mail, "someone@partner.example")
            smtp.close()
        assert (code, text[:5]) == (421, b"4.3.0")
    finally:
        await listener.stop(1)
        await asyncio.to_thread(committer.stop)
        endpoint.close()
