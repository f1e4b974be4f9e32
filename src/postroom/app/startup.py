"""Start-up checks: each problem that stops a node from opening or serving, as one line.

A `StartupError`'s message names the problem and the key or flag to change: a data directory that
does not exist (`postroom init` makes one; `App.open` never does), a database that cannot be opened or
reached, a full disk, a `[tls]` certificate or key that is missing, unreadable or not a pair, a
`[tls] client_ca_file` that is missing or holds no CA certificate, an SRS key file that is missing
(when configured), unreadable or empty, a listen address already in use. `check(settings)` runs the
checks that need no serving (the database briefly), for `postroom check-config`; `App.open` and
`App.serve` call the rest where they happen.
"""

from __future__ import annotations

import errno
import os
import secrets
import ssl
from collections.abc import Awaitable
from pathlib import Path

import sqlalchemy
import sqlalchemy.exc

from postroom.config import Settings

DATABASE_PROBE_SECONDS = 5  # `check` gives a database server this long to answer


class StartupError(Exception):
    """The node cannot open or start; the message is one line: what is wrong and which key to change."""


FULL_BELOW = 64 * 1024  # free bytes under which a failure to open the store is put down to a full disk


def _space_left(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return FULL_BELOW  # cannot tell: not called full
    return stats.f_bavail * stats.f_frsize


def full_disk(error: BaseException, settings: Settings) -> StartupError | None:
    """A StartupError for a full disk, else None: ENOSPC, or any failure to open the store while the data
    directory's file system has (next to) no space left (SQLite reports that as a "disk I/O error")."""
    if (
        (isinstance(error, OSError) and error.errno == errno.ENOSPC)
        or "disk is full" in str(error)
        or _space_left(settings.data_dir) < FULL_BELOW
    ):
        return StartupError(
            f"the data directory {settings.data_dir} is full (no space left on the device): "
            f"free space there, or move [node] data_dir in {settings.source}"
        )
    return None


def database_error(error: sqlalchemy.exc.SQLAlchemyError, settings: Settings) -> StartupError:
    full = full_disk(error, settings)
    if full is not None:
        return full
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    shown = sqlalchemy.make_url(settings.database_url).render_as_string(hide_password=True)
    return StartupError(
        f"cannot open the database {shown}: {reason}; check that it is reachable, "
        f"or fix [database] url in {settings.source}"
    )


def unusable_url(error: BaseException, settings: Settings) -> StartupError:
    return StartupError(
        f"[database] url: {error}; use postgresql+psycopg://... (with the `postgres` extra installed) "
        f"or leave it empty for SQLite, in {settings.source}"
    )


def check_data_dir(settings: Settings) -> None:
    if not settings.data_dir.is_dir():
        raise StartupError(
            f"the data directory {settings.data_dir} does not exist: set [node] data_dir in "
            f"{settings.source} to the node's directory, or create a node with `postroom init DIR`"
        )


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The server TLS context of `[tls]`; StartupError when a file is missing, unreadable or not a pair."""
    tls = settings.tls
    for key, path in (("certificate", tls.certificate), ("key", tls.key)):
        if not path.is_file():
            raise StartupError(
                f"[tls] {key}: there is no file {path}; point [tls] {key} in {settings.source} at it"
            )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise StartupError(
            f"[tls] certificate {tls.certificate} and key {tls.key} cannot be used: {reason} (a PEM "
            f"certificate chain and its own private key are needed); fix [tls] in {settings.source}"
        ) from None
    return context


def mx_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The context the MX listener asks STARTTLS clients for a certificate with, or None when
    `[tls] request_client_certificate` is off: `tls_context`, with `CERT_OPTIONAL` and the CAs of
    `[tls] client_ca_file` when set, else the system's. A client that sends none is served as before;
    a verified certificate's names can attribute the connection to an inbound connector (spec
    §3.4). StartupError when the CA file is missing or holds no certificate.

    The trade-off (docs/smtp.md, `smtp.client_certificates`): OpenSSL fails the handshake when a
    client sends a certificate that does not verify (self-signed, an unknown CA, no TLS client
    purpose); Python's ssl has no verify callback to accept it. The listener then stops asking that
    client for a day, so its next try gets through. Operators whose partners' servers send such
    certificates add their CA to `client_ca_file` or set `request_client_certificate = false`."""
    tls = settings.tls
    if not tls.request_client_certificate:
        return None
    context = tls_context(settings)
    context.verify_mode = ssl.CERT_OPTIONAL
    if not tls.client_ca_file:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return context
    path = Path(tls.client_ca_file)
    if not path.is_file():
        raise StartupError(
            f"[tls] client_ca_file: there is no file {path}; point it at the PEM file of the CAs that "
            f"sign your connectors' client certificates, or leave it empty, in {settings.source}"
        )
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise StartupError(
            f"[tls] client_ca_file {path} cannot be used: {reason} (PEM CA certificates are needed); "
            f"fix [tls] client_ca_file in {settings.source}"
        ) from None
    return context


def check(settings: Settings) -> None:
    """Check what `App.open` and `serve` need, without serving: raises StartupError naming the first
    problem. The data directory exists; the TLS files load as a pair; a PostgreSQL database answers
    within `DATABASE_PROBE_SECONDS` (a SQLite file is not opened: a check creates nothing)."""
    check_data_dir(settings)
    tls_context(settings)
    mx_tls_context(settings)
    if settings.database.url.startswith("postgresql"):
        try:
            engine = sqlalchemy.create_engine(
                settings.database.url,
                poolclass=sqlalchemy.NullPool,
                connect_args={"connect_timeout": DATABASE_PROBE_SECONDS},
            )
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            raise unusable_url(error, settings) from None
        try:
            with engine.connect():
                pass
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise database_error(error, settings) from None
        finally:
            engine.dispose()


async def listen(table: str, starting: Awaitable[object], settings: Settings) -> None:
    """Await a listener's start; a bind failure (the port in use) becomes a StartupError naming the key."""
    try:
        await starting
    except OSError as error:
        raise bind_error(table, error, settings) from None


def bind_error(table: str, error: OSError, settings: Settings) -> StartupError:
    """The one line for a listen address that cannot be bound (in use, not this machine's, ...)."""
    full = str(error).removeprefix(f"[Errno {error.errno}] ")
    return StartupError(
        f"[{table}] listen: cannot listen: {full}; change [{table}] listen in {settings.source} "
        "or stop what holds the port"
    )


SRS_KEY_OCTETS = 32  # the random key a new SRS key file holds (hex)


def srs_secret(settings: Settings) -> bytes:
    """The SRS secret key: the first line of `[service] srs_secret_file`. The default file (srs.key in
    the data directory) is created with a random key, mode 0600, when it does not exist yet; a
    configured file must exist. StartupError when it is missing, unreadable or empty."""
    path = settings.srs_secret_path
    key = "[service] srs_secret_file"
    if not settings.service.srs_secret_file and not path.exists():
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this node made it first: read theirs
        except OSError as error:
            raise StartupError(
                f"{key}: cannot create the SRS key {path}: {error.strerror}; fix [node] data_dir or set "
                f"{key} in {settings.source}"
            ) from None
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(SRS_KEY_OCTETS) + "\n")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(
            f"{key}: there is no file {path} (the SRS secret key); create it with a random line, e.g. "
            f"`openssl rand -hex 32 > {path}; chmod 600 {path}`, or fix {key} in {settings.source}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise StartupError(
            f"{key}: cannot read the SRS secret key {path}: {reason}; make it readable by the node "
            f"(mode 0600) or fix {key} in {settings.source}"
        ) from None
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise StartupError(
            f"{key}: the SRS secret key file {path} is empty; write a random line into it "
            f"(`openssl rand -hex 32`) or fix {key} in {settings.source}"
        )
    return secret.encode("utf-8")
