"""`postroom serve` at the default log level prints one mail log line per message on stderr."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys

from tests.conftest import Hosted


def test_serve_prints_the_mail_log_line_at_the_default_level(hosted: Hosted) -> None:
    assert hosted.settings.log_level == "info"
    env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CONFIG"}
    process = subprocess.Popen(
        [sys.executable, "-m", "postroom", "-c", str(hosted.settings.source), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        mx = None
        for line in process.stdout:
            if line.startswith("mx "):
                host, _, port = line.split()[-1].rpartition(":")
                mx = (host, int(port))
            if line.startswith("serving"):
                break
        assert mx is not None, "the node did not say where it listens"
        with smtplib.SMTP(*mx) as client:
            assert (
                client.sendmail("news@partner.example", ["bob@contoso.com"], b"Subject: hi\r\n\r\nhi\r\n")
                == {}
            )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    [line] = [line for line in stderr.splitlines() if " queued id=" in line]
    assert "INFO postroom.app.mx" in line
    assert "from=<news@partner.example>" in line and "to=<bob@contoso.com> status=delivered" in line
