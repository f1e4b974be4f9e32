"""The MX listener's request for client certificates (`[tls] request_client_certificate`,
`client_ca_file`): the context it asks with, and the one-line start-up errors of a CA file that
cannot be used."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest

from postroom.app.startup import StartupError, check, mx_tls_context
from postroom.config import Settings
from tests.support.node import make_node
from tests.support.pki import TestCa


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_node(tmp_path_factory.mktemp("mx-tls") / "node")


def with_tls(settings: Settings, **values: object) -> Settings:
    return replace(settings, tls=replace(settings.tls, **values))  # type: ignore[arg-type]


def test_by_default_the_mx_listener_asks_and_trusts_the_systems_cas(settings: Settings) -> None:
    assert settings.tls.request_client_certificate
    context = mx_tls_context(settings)
    assert context is not None and context.verify_mode is ssl.CERT_OPTIONAL
    assert context.cert_store_stats()["x509_ca"] > 0


def test_a_client_ca_file_is_the_only_ca_trusted(settings: Settings, tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    context = mx_tls_context(with_tls(settings, client_ca_file=str(ca.certificate)))
    assert context is not None and context.verify_mode is ssl.CERT_OPTIONAL
    assert context.cert_store_stats()["x509_ca"] == 1


def test_asking_can_be_turned_off(settings: Settings) -> None:
    assert mx_tls_context(with_tls(settings, request_client_certificate=False)) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "there is no file"), (b"not a certificate\n", "cannot be used")],
    ids=["missing", "not-pem"],
)
def test_a_ca_file_that_cannot_be_used_is_one_line(
    settings: Settings, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    broken = with_tls(settings, client_ca_file=str(path))
    for attempt in (mx_tls_context, check):
        with pytest.raises(StartupError) as raised:
            attempt(broken)
        message = str(raised.value)
        assert "\n" not in message
        assert "[tls] client_ca_file" in message and expected in message and str(path) in message
