"""[clients]: the public names and ports mail clients are told (autoconfig, Autodiscover), every bad
value named with its key and fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from postroom.app.setup import render_config
from postroom.config import ClientSettings, Settings, load_settings
from tests.config.test_loader import problems_of, write


def test_defaults_are_the_service_host_on_the_standard_ports(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.clients == ClientSettings("", 993, 143, "", 465, 587)
    rendered = tomllib.loads(render_config(Settings(source=tmp_path / "postroom.toml")))["clients"]
    assert rendered == {
        "imap_host": "",
        "imaps_port": 993,
        "imap_port": 143,
        "submission_host": "",
        "submissions_port": 465,
        "submission_port": 587,
    }


def test_public_names_and_ports_load(tmp_path: Path) -> None:
    text = """\
[clients]
imap_host = "imap.example.net"
imaps_port = 10993
imap_port = 0
submission_host = "smtp.example.net"
submissions_port = 0
submission_port = 10587
"""
    clients = load_settings(write(tmp_path, text)).clients
    assert clients == ClientSettings("imap.example.net", 10993, 0, "smtp.example.net", 0, 10587)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            'imap_host = "imap"',
            "clients.imap_host",
            'must be a fully qualified host name, e.g. "imap.example.net", or "" for [service] hostname',
        ),
        (
            'submission_host = "smtp example.net"',
            "clients.submission_host",
            'must be a fully qualified host name, e.g. "imap.example.net", or "" for [service] hostname',
        ),
        (
            "imaps_port = 70000",
            "clients.imaps_port",
            "must be a port number from 1 to 65535, or 0: not offered",
        ),
        ("imaps_port = 0\nimap_port = 0", "clients.imap_port", "is 0 while imaps_port is 0 too"),
        (
            "submissions_port = 0\nsubmission_port = 0",
            "clients.submission_port",
            "is 0 while submissions_port is 0 too",
        ),
        ("pop3_port = 995", "clients.pop3_port", "unknown key"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, key: str, message: str) -> None:
    assert problems_of(write(tmp_path, f"[clients]\n{text}\n")) == {key: message}
