"""The `[admin] tls` key: read as a bool, false by default, a wrong type reported with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import ConfigError, load_settings, render_config


def load(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "tls"),
    [("", False), ("[admin]\n", False), ("[admin]\ntls = false\n", False), ("[admin]\ntls = true\n", True)],
)
def test_admin_tls(tmp_path: Path, text: str, tls: bool) -> None:
    assert load_settings(load(tmp_path, text)).admin_tls is tls


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_admin_tls_must_be_a_bool(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(load(tmp_path, f"[admin]\ntls = {value}\n"))
    [problem] = caught.value.problems
    assert problem.key == "admin.tls"
    assert problem.message.startswith("expected bool, found ")
    assert problem.fix == "set it like `tls = false`"


def test_init_writes_admin_tls_off(tmp_path: Path) -> None:
    text = render_config(
        data_dir=".",
        service_domain="postroom.example",
        hostname="mx.postroom.example",
        mx_listen="127.0.0.1:2525",
        submission_listen="127.0.0.1:2587",
        imap_listen="127.0.0.1:2143",
        admin_listen="127.0.0.1:8080",
        nameservers=[],
    )
    assert '\n[admin]\nlisten = ["127.0.0.1:8080"]\ntls = false ' in text
    assert load_settings(load(tmp_path, text)).admin_tls is False
