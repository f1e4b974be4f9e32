"""[protection]'s connection filter settings: IP lists and DNS blocklists, every bad entry named with
its file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import ConfigError, load_settings
from tests.config.test_loader import write


def test_lists_and_blocklists_load(tmp_path: Path) -> None:
    text = """\
[protection]
ip_allow = ["192.0.2.0/24", "2001:db8:1::/48"]
ip_block = ["198.51.100.7", "203.0.113.10-203.0.113.20"]
dnsbl = ["zen.example.org", "bl.example.net=127.0.0.2,127.0.0.4-127.0.0.11"]
connections_per_minute = 30
messages_per_minute = 60
rate_limited_clients = 5000
"""
    protection = load_settings(write(tmp_path, text)).protection
    assert protection.ip_allow == ("192.0.2.0/24", "2001:db8:1::/48")
    assert protection.ip_block == ("198.51.100.7", "203.0.113.10-203.0.113.20")
    assert protection.dnsbl == ("zen.example.org", "bl.example.net=127.0.0.2,127.0.0.4-127.0.0.11")
    assert (protection.connections_per_minute, protection.messages_per_minute) == (30, 60)
    assert protection.rate_limited_clients == 5000


@pytest.mark.parametrize(
    ("text", "key", "message", "fix"),
    [
        (
            'ip_allow = ["10.0.0.0/8"]',
            "protection.ip_allow",
            "'10.0.0.0/8' is wider than a list takes (/24 to /32)",
            "use a mail flow rule for a /8, or list its /24 networks",
        ),
        (
            'ip_block = ["192.0.2.1", "192.0.2.5/24"]',
            "protection.ip_block",
            "'192.0.2.5/24' has host bits set",
            'write the network, "192.0.2.0/24"',
        ),
        (
            'dnsbl = ["zen.example.org=10.0.0.2"]',
            "protection.dnsbl",
            "'zen.example.org=10.0.0.2' has '10.0.0.2', not answers within 127.0.0.0/8",
            'write the answers that list, e.g. "zen.example.org=127.0.0.2,127.0.0.4-127.0.0.11"',
        ),
        ('dnsbl = ["zen"]', "protection.dnsbl", "'zen' does not start with a DNS zone", "zen.example.org"),
        ("connections_per_minute = 0", "protection.connections_per_minute", "must be greater than 0", ""),
        ("rate_limited_clients = -1", "protection.rate_limited_clients", "must be greater than 0", ""),
    ],
)
def test_a_bad_entry_names_file_key_and_fix(
    tmp_path: Path, text: str, key: str, message: str, fix: str
) -> None:
    path = write(tmp_path, f"[protection]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = caught.value.problems
    assert (problem.key, problem.message) == (key, message)
    assert fix in problem.fix
    assert str(caught.value).startswith(f"{path}: {key}: {message}")


def test_every_bad_entry_is_reported_at_once(tmp_path: Path) -> None:
    text = '[protection]\nip_allow = ["10.0.0.0/8", "nonsense"]\nip_block = ["2001:db8::/32"]\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert [(p.key, p.message.split()[0]) for p in caught.value.problems] == [
        ("protection.ip_allow", "'10.0.0.0/8'"),
        ("protection.ip_allow", "'nonsense'"),
        ("protection.ip_block", "'2001:db8::/32'"),
    ]
