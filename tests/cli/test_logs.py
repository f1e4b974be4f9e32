"""`postroom serve`'s log: every record is written, in order, by the time the node stops."""

from __future__ import annotations

import logging
import threading

import pytest

from postroom.cli.logs import serving_log


def test_every_record_is_written_in_order_with_its_traceback_before_the_log_closes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("postroom.app.mx")
    with serving_log("info"):
        for n in range(500):
            log.info("queued id=%d", n)
        log.debug("not at info")
        try:
            raise ValueError("the disk is full")
        except ValueError:
            log.exception("commit failed")
    lines = capsys.readouterr().err.splitlines()
    queued = [line.rpartition("id=")[2] for line in lines if "queued id=" in line]
    assert queued == [str(n) for n in range(500)]
    assert all(" INFO postroom.app.mx: queued" in line for line in lines[:500])
    assert "not at info" not in "\n".join(lines)
    assert any("ERROR postroom.app.mx: commit failed" in line for line in lines)
    assert "ValueError: the disk is full" in lines[-1]


def test_records_from_other_threads_are_written_and_the_root_logger_is_given_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("postroom.storage")
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    with serving_log("info"):
        writers = [
            threading.Thread(target=lambda k=k: [log.info("writer %d line %d", k, n) for n in range(100)])
            for k in range(3)
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
    err = capsys.readouterr().err
    assert sum(1 for line in err.splitlines() if " line " in line) == 300
    assert (root.level, root.handlers) == before
