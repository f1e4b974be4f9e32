"""A private, throwaway clamd (Debian's `clamav-daemon`) on a signature database written for the test.

There is no internet for freshclam, and clamd refuses to start without signatures, so the instance
gets its own database directory with three signatures: EICAR's test file as a body pattern (`.ndb`),
a pattern of Postroom's own (`OWN_PATTERN`), and the SHA-256 of a file of its own (`OWN_HASH_FILE`,
`.hsb`). ClamAV names signatures that are not its own with a `.UNOFFICIAL` suffix.

The instance listens on a Unix socket in its temp dir and on 127.0.0.1 at a free port, runs in the
foreground as a child of the test, logs to a file, and is stopped with SIGTERM. `started_in` is how
long it took from exec to answering PING (about 0.1 s with three signatures: there is no daily.cvd to
load). Fails with RuntimeError naming what `.ci/run` must install when the binary is missing.

Run it alone to try it: ``.venv/bin/python -m tests.support.clamd`` starts one and prints its sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CLAMD = Path("/usr/sbin/clamd")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"
OWN_PATTERN = b"POSTROOM-TEST-MALWARE-7f3a9c"  # detected anywhere in a file
OWN_PATTERN_NAME = "Postroom.Test.Pattern.UNOFFICIAL"
OWN_HASH_FILE = b"Postroom test payload: detected by its SHA-256 only.\n" * 3
OWN_HASH_NAME = "Postroom.Test.Hash.UNOFFICIAL"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Clamd:
    def __init__(self, *, stream_max_length: str = "2M") -> None:
        if not CLAMD.exists():
            raise RuntimeError(f"{CLAMD} is missing: .ci/run must install clamav-daemon")
        self.base = Path(tempfile.mkdtemp(prefix="postroom-clamd-"))
        self.socket_path = self.base / "clamd.sock"
        self.port = free_port()
        self.stream_max_length = stream_max_length
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        database = self.base / "db"
        database.mkdir(exist_ok=True)
        (self.base / "tmp").mkdir(exist_ok=True)
        (database / "postroom.ndb").write_text(
            f"Eicar-Test-Signature:0:*:{EICAR.hex()}\nPostroom.Test.Pattern:0:*:{OWN_PATTERN.hex()}\n"
        )
        digest = hashlib.sha256(OWN_HASH_FILE).hexdigest()
        (database / "postroom.hsb").write_text(f"{digest}:{len(OWN_HASH_FILE)}:Postroom.Test.Hash\n")
        config = self.base / "clamd.conf"
        config.write_text(
            "\n".join(
                [
                    f"DatabaseDirectory {database}",
                    f"LocalSocket {self.socket_path}",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    "Foreground yes",
                    f"LogFile {self.base / 'clamd.log'}",
                    f"TemporaryDirectory {self.base / 'tmp'}",
                    f"StreamMaxLength {self.stream_max_length}",
                    "MaxThreads 4",
                    "Bytecode no",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 60.0) -> Clamd:
        config = self.write_config()
        began = time.monotonic()
        self.process = subprocess.Popen(
            [str(CLAMD), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                log = (self.base / "clamd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"clamd exited with {self.process.returncode}:\n{log}")
            if self.ping():
                self.started_in = time.monotonic() - began
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(2)
                client.connect(str(self.socket_path))
                client.sendall(b"zPING\0")
                return client.recv(64).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(OSError):
            for path in sorted(self.base.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            self.base.rmdir()


if __name__ == "__main__":
    instance = Clamd().start()
    print(f"clamd started in {instance.started_in:.2f} s: {instance.socket_path}, {instance.tcp}")
    try:
        input("Enter stops it. ")
    finally:
        instance.stop()
