"""`postroom` as a user runs it, without paying Python's start-up for every command.

Each command is a real process of its own: its argv, its environment, its working directory, its own
stdin, stdout and stderr (files), its exit status from the kernel, `python -m postroom` run in it by
`runpy` exactly as the interpreter runs it. What is saved is the work every one of those processes
would do before reading its arguments: starting the interpreter and importing `postroom.cli` (a
second of CPU each, several on this busy 2-core machine, for the suite's hundreds of commands).
A zygote process does that once per test process and forks a child for each command.

The zygote is single-threaded (a fork copies only the calling thread, so no lock can be held by a
thread the child lacks) and imports nothing but `postroom.cli` (and what typer imports when it
parses). It is started with the environment
of the first command, and each child gets its command's own; a command whose environment differs in
more than the test pytest names in it (a module may read the environment at import) runs as a plain
`subprocess.run` instead. `test_version`, `support.process.ServeProcess` and the worker tests
still start the interpreter itself. The zygote ends with its test process (it reads the end of its
channel, and is waited for).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence

# The zygote: imports the CLI, then forks one child per request. A child takes the request's files
# as 0, 1 and 2 and runs `python -m postroom`; its SystemExit or exception ends it as they end the
# interpreter. The zygote answers with the child's pid, then its exit status.
ZYGOTE = """
import contextlib, importlib, json, os, runpy, socket, sys
import postroom.cli
for lazy in ("typer._adapters", "typer._click.decorators", "rich._emoji_codes"):  # typer's, at parse
    with contextlib.suppress(ImportError):
        importlib.import_module(lazy)

channel = socket.socket(fileno=int(sys.argv[1]))
while True:
    message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 3)
    if not message:
        break
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        channel.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()
        sys.argv = ["postroom", *request["args"]]
        runpy.run_module("postroom", run_name="__main__", alter_sys=True)
        sys.exit(0)
    for fd in fds:
        os.close(fd)
    channel.send(b"%d" % pid)
    channel.send(b"%d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
_START_TIMEOUT = 30.0  # seconds for the zygote to import the CLI and fork


class _Zygote:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.base = _base(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel = ours
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.channel.close()  # the zygote reads the end of its channel and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def run(
        self, args: Sequence[str], env: Mapping[str, str], stdin: str, timeout: float
    ) -> tuple[int, bytes, bytes]:
        with (
            tempfile.TemporaryFile() as given,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            given.write(stdin.encode(locale.getpreferredencoding(False)))
            given.seek(0)
            request = json.dumps({"args": list(args), "env": dict(env), "cwd": os.getcwd()}).encode()
            socket.send_fds(self.channel, [request], [given.fileno(), out.fileno(), err.fileno()])
            self.channel.settimeout(_START_TIMEOUT)
            pid = int(self.channel.recv(64))
            self.channel.settimeout(timeout)
            try:
                status = int(self.channel.recv(64))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self.channel.settimeout(_START_TIMEOUT)
                self.channel.recv(64)
                raise subprocess.TimeoutExpired(["postroom", *args], timeout) from None
            out.seek(0)
            err.seek(0)
            return status, out.read(), err.read()


# Set by pytest for each test and phase; nothing reads it at import, so the zygote serves them all.
_PER_TEST = "PYTEST_CURRENT_TEST"


def _base(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a zygote is started with, less what changes from test to test."""
    return {key: value for key, value in env.items() if key != _PER_TEST}


_lock = threading.Lock()
_zygote: _Zygote | None = None


def _text(data: bytes) -> str:
    """As `subprocess.run(text=True)` reads a stream: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def run_postroom(
    args: Sequence[str], env: Mapping[str, str], stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`python -m postroom ARGS` with `env` and `stdin` (None: empty), its output as text, like
    `subprocess.run(..., capture_output=True, text=True, timeout=timeout)`."""
    global _zygote
    command = [sys.executable, "-m", "postroom", *args]
    with _lock:
        if _zygote is not None and (_zygote.base != _base(env) or not _zygote.alive()):
            if _zygote.alive():
                # Another environment: modules may read it at import; it gets an interpreter of its own.
                return subprocess.run(
                    command, capture_output=True, text=True, input=stdin or "", env=dict(env), timeout=timeout
                )
            _zygote.close()
            _zygote = None
        if _zygote is None:
            _zygote = _Zygote(env)
            atexit.register(_zygote.close)
        status, out, err = _zygote.run(args, env, stdin or "", timeout)
    return subprocess.CompletedProcess(command, status, _text(out), _text(err))
