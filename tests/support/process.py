"""`postroom serve` as a real child process, for tests that kill it (-9) or stop it (SIGTERM).

One process by default (`--workers 1`): a kill -9 then kills the node outright. (With a supervisor,
the workers of a supervisor killed with -9 drain on SIGTERM: a clean stop, not a crash;
tests/integration/test_workers.py tests that.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"^(\S+)\s+[A-Z]+\s+(\S+):(\d+)\s*$")


class ServeProcess:
    def __init__(self, config: Path, *, workers: int = 1) -> None:
        self.config = config
        self.workers = workers
        self.process: subprocess.Popen[str] | None = None
        self.mx: tuple[str, int] = ("", 0)
        self.listeners: dict[str, tuple[str, int]] = {}  # name ("mx", "imap", ...) -> its address

    def start(self, timeout: float = 20.0) -> ServeProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postroom",
                "-c",
                str(self.config),
                "serve",
                "--workers",
                str(self.workers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"postroom serve exited with {self.process.wait()} before listening")
            match = _LISTENING.match(line.strip())
            if match:
                self.listeners[match.group(1)] = (match.group(2).strip("[]"), int(match.group(3)))
            elif line.startswith("serving") and "mx" in self.listeners:
                self.mx = self.listeners["mx"]
                return self
        raise TimeoutError("postroom serve did not report its MX listener")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)
