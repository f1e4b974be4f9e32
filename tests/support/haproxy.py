"""A real haproxy (the distribution's) in front of a node: TCP mode, `send-proxy` or `send-proxy-v2`.

`Haproxy(backend, source=...)` writes a private configuration in a temporary directory and runs haproxy
in the foreground (`-db`) on a free port of 127.0.0.1; it connects to `backend` from `source`, so the
node sees that address as the balancer and the header names the client's own address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.sink import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # installed by .ci/run


class Haproxy:
    def __init__(
        self, backend: tuple[str, int], *, source: str = "127.0.0.1", send_proxy: str = "send-proxy-v2"
    ):
        self.backend = backend
        self.source = source
        self.send_proxy = send_proxy
        self.address = ("127.0.0.1", 0)
        self._process: subprocess.Popen[bytes] | None = None
        self._directory = Path(tempfile.mkdtemp(prefix="postroom-haproxy-"))

    def start(self, timeout: float = 10.0) -> Haproxy:
        self.address = ("127.0.0.1", free_port())
        config = self._directory / "haproxy.cfg"
        config.write_text(
            "global\n"
            "    maxconn 100\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend smtp\n"
            f"    bind {self.address[0]}:{self.address[1]}\n"
            "    default_backend node\n"
            "backend node\n"
            f"    server node {self.backend[0]}:{self.backend[1]} {self.send_proxy} source {self.source}\n"
        )
        self._process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"haproxy exited with {self._process.returncode}: {error}")
            try:
                socket.create_connection(self.address, timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("haproxy did not listen in time")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> Haproxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
