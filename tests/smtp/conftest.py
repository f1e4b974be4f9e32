"""Fixtures for the SMTP room: a self-signed certificate, TLS contexts, and the in-memory post office."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.app.setup import write_self_signed

from .harness import HOSTNAME
from .twin import MemoryPostOffice


@dataclass(frozen=True)
class CertificateFiles:
    certificate: Path
    key: Path


@pytest.fixture(scope="session")
def certificate_files(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """A self-signed certificate for the listener's host name and 127.0.0.1, as `postroom init` makes."""
    directory = tmp_path_factory.mktemp("tls")
    files = CertificateFiles(directory / "cert.pem", directory / "key.pem")
    write_self_signed(files.certificate, files.key, [HOSTNAME])
    return files


@pytest.fixture
def server_tls(certificate_files: CertificateFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_files.certificate, certificate_files.key)
    return context


@pytest.fixture
def client_tls(certificate_files: CertificateFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate_files.certificate))
    context.check_hostname = False
    return context


@pytest.fixture
def office() -> MemoryPostOffice:
    return MemoryPostOffice()
