"""The SRS key at start: created at first use in the data directory (mode 0600, kept across starts), a
configured file that is missing, unreadable or empty is a start-up error naming the key; the
`[service] srs_*` keys are read and checked."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from postroom.app import App, StartupError
from postroom.app.startup import srs_secret
from postroom.config import ConfigError, Settings, load_settings
from tests.support.node import make_node


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_node(tmp_path / "node")


def test_the_default_key_is_made_once_with_mode_0600(settings: Settings) -> None:
    path = settings.data_dir / "srs.key"
    assert not path.exists()
    first = srs_secret(settings)
    assert len(first) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert srs_secret(settings) == first  # kept: bounces to earlier rewrites still verify
    app = App.open(settings)
    try:
        srs = app.srs()
        assert (srs.domain, srs.max_age_days) == ("postroom.test", 21)
    finally:
        app.close()


def test_a_configured_key_file_must_exist_and_hold_a_key(settings: Settings, tmp_path: Path) -> None:
    missing = replace(settings, service=replace(settings.service, srs_secret_file=str(tmp_path / "none.key")))
    with pytest.raises(StartupError, match=r"\[service\] srs_secret_file: there is no file"):
        srs_secret(missing)
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(StartupError, match=r"\[service\] srs_secret_file: .* is empty"):
        srs_secret(replace(settings, service=replace(settings.service, srs_secret_file=str(empty))))
    unreadable = tmp_path / "dir.key"
    unreadable.mkdir()
    with pytest.raises(StartupError, match=r"\[service\] srs_secret_file: cannot read"):
        srs_secret(replace(settings, service=replace(settings.service, srs_secret_file=str(unreadable))))
    good = tmp_path / "good.key"
    good.write_text("shared-secret\nignored\n")
    os.chmod(good, 0o600)
    assert srs_secret(replace(settings, service=replace(settings.service, srs_secret_file=str(good)))) == (
        b"shared-secret"
    )


def test_the_srs_keys_are_read_and_checked(settings: Settings) -> None:
    text = settings.source.read_text()
    assert 'srs_domain = ""' in text and "srs_max_age_days = 21" in text  # `postroom init` writes them
    settings.source.write_text(
        text.replace('srs_domain = ""', 'srs_domain = "srs.example.net"')
        .replace('srs_secret_file = ""', 'srs_secret_file = "keys/srs"')
        .replace("srs_max_age_days = 21", "srs_max_age_days = 7")
    )
    loaded = load_settings(settings.source)
    assert loaded.service.srs_host == "srs.example.net" and loaded.service.srs_max_age_days == 7
    assert loaded.srs_secret_path == settings.source.parent / "keys" / "srs"
    settings.source.write_text(
        text.replace('srs_domain = ""', 'srs_domain = "not a domain"').replace(
            "srs_max_age_days = 21", "srs_max_age_days = 0"
        )
    )
    with pytest.raises(ConfigError) as error:
        load_settings(settings.source)
    assert "service.srs_domain" in str(error.value) and "service.srs_max_age_days" in str(error.value)
