"""Remote domains: a tenant's settings for the mail it sends to other domains (spec §7).

Every tenant has the built-in **Default** remote domain (pattern `*`): it always exists, its settings
can be changed, it cannot be removed or renamed. Until it is changed it has no row and holds the
defaults of `model.outbound.RemoteDomainSettings`. A tenant adds any number of specific remote
domains, each with a name unique in the tenant and one pattern unique in the tenant:

| pattern          | covers                                                              |
|------------------|---------------------------------------------------------------------|
| `example.com`    | exactly example.com                                                 |
| `*.example.com`  | every subdomain of example.com (a.example.com, a.b.example.com),    |
|                  | **not** example.com itself: add `example.com` too to cover it       |
| `*`              | every domain (the Default)                                          |

The most specific pattern wins: an exact pattern, then the wildcard with the longest suffix, then
the Default (`match_remote_domain`). Patterns are stored as ASCII (A-labels), lower case, so an
internationalized domain matches however it is written.

Validation (`InvalidInputError`, a sentence that says what to do): the pattern's syntax, a line wrap
of 0 (unlimited) to 132, a character set Python's codecs know, an out-of-office type and content type
from their lists. Reads and changes take the caller's `Scope`; another tenant's remote domains are
answered as ones that do not exist. A change is logged under the tenant for caching nodes
(`view.CachedDirectory.remote_domain`), so it is in force within the cache's refresh interval.

`remote_domains_of(conn, tenant_id)` is the unscoped mail-flow lookup the views use: a tenant's
remote domains' settings, the Default first.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from postroom.directory.base import DirectoryBase
from postroom.directory.errors import ConflictError, InvalidInputError, NotFoundError, RefusedError
from postroom.directory.records import RemoteDomain, Tenant
from postroom.model import AddressError, normalize_domain
from postroom.model.outbound import ContentType, RemoteDomainSettings
from postroom.model.scope import Scope
from postroom.storage.schema import remote_domains

DEFAULT_NAME = "Default"
DEFAULT_PATTERN = "*"
MAX_LINE_WRAP = 132
OOF_TYPES = ("external", "external-legacy", "internal-legacy", "none")
MAX_NAME_LENGTH = 64
DEFAULT_SETTINGS = RemoteDomainSettings()


@dataclass(frozen=True, slots=True)
class RemoteDomainChange:
    """The settings to change; None leaves one as it is."""

    auto_reply: bool | None = None
    auto_forward: bool | None = None
    oof_type: str | None = None
    delivery_reports: bool | None = None
    ndr: bool | None = None
    content_type: str | None = None
    line_wrap: int | None = None
    charset: str | None = None


def normalize_pattern(pattern: str) -> str:
    """The stored form of a remote domain pattern; InvalidInputError when it is not one."""
    text = pattern.strip().lower().rstrip(".")
    if text == DEFAULT_PATTERN:
        return text
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    try:
        ascii_name = normalize_domain(name)
    except AddressError as error:
        raise InvalidInputError(
            f"{pattern!r} is not a remote domain pattern ({error}); write example.com, or *.example.com "
            "for its subdomains"
        ) from None
    if "*" in ascii_name or "." not in ascii_name:
        raise InvalidInputError(
            f"{pattern!r} is not a remote domain pattern; write example.com, or *.example.com for its "
            "subdomains (a wildcard only as the whole first label)"
        )
    return f"*.{ascii_name}" if wildcard else ascii_name


def match_remote_domain(candidates: Sequence[RemoteDomainSettings], domain: str) -> RemoteDomainSettings:
    """The settings of the most specific pattern covering `domain` (ASCII, lower case); the Default's
    when none does (the first candidate with pattern `*`, else the built-in defaults)."""
    name = domain.lower().rstrip(".")
    best: RemoteDomainSettings | None = None
    best_rank = -1
    for candidate in candidates:
        pattern = candidate.pattern
        if pattern == name:
            return candidate
        if pattern == DEFAULT_PATTERN:
            rank = 0
        elif pattern.startswith("*.") and name.endswith(pattern[1:]):
            rank = len(pattern)
        else:
            continue
        if rank > best_rank:
            best, best_rank = candidate, rank
    return best or DEFAULT_SETTINGS


def _settings_from_row(row: Row[Any]) -> RemoteDomainSettings:
    return RemoteDomainSettings(
        pattern=row.pattern,
        auto_reply=bool(row.auto_reply),
        auto_forward=bool(row.auto_forward),
        oof_type=row.oof_type,
        delivery_reports=bool(row.delivery_reports),
        ndr=bool(row.ndr),
        content_type=ContentType(row.content_type),
        line_wrap=int(row.line_wrap),
        charset=row.charset,
    )


def remote_domains_of(conn: Connection, tenant_id: int) -> tuple[RemoteDomainSettings, ...]:
    """A tenant's remote domains' settings, the Default first (its defaults when it has no row)."""
    rows = conn.execute(
        select(remote_domains).where(remote_domains.c.tenant_id == tenant_id).order_by(remote_domains.c.id)
    ).all()
    found = [_settings_from_row(row) for row in rows]
    if not any(s.pattern == DEFAULT_PATTERN for s in found):
        found.insert(0, DEFAULT_SETTINGS)
    found.sort(key=lambda s: s.pattern != DEFAULT_PATTERN)
    return tuple(found)


def _apply(settings: RemoteDomainSettings, change: RemoteDomainChange) -> RemoteDomainSettings:
    values: dict[str, object] = {}
    for item in fields(change):
        value = getattr(change, item.name)
        if value is not None:
            values[item.name] = value
    if "line_wrap" in values:
        line_wrap = values["line_wrap"]
        assert isinstance(line_wrap, int)
        if not 0 <= line_wrap <= MAX_LINE_WRAP:
            raise InvalidInputError(
                f"line wrap {line_wrap} is out of range: give 0 (unlimited) to {MAX_LINE_WRAP}"
            )
    if "oof_type" in values:
        oof = str(values["oof_type"]).strip().lower()
        if oof not in OOF_TYPES:
            raise InvalidInputError(f"out-of-office type {oof!r} is not one of: {', '.join(OOF_TYPES)}")
        values["oof_type"] = oof
    if "content_type" in values:
        text = str(values["content_type"]).strip().lower()
        try:
            values["content_type"] = ContentType(text)
        except ValueError:
            known = ", ".join(c.value for c in ContentType)
            raise InvalidInputError(f"content type {text!r} is not one of: {known}") from None
    if "charset" in values:
        charset = str(values["charset"]).strip().lower()
        if charset:
            try:
                codecs.lookup(charset)
            except LookupError:
                raise InvalidInputError(
                    f"character set {charset!r} is unknown; give a name such as utf-8, iso-8859-1 or "
                    'windows-1252, or "" to leave messages without one alone'
                ) from None
        values["charset"] = charset
    return replace(settings, **values)  # type: ignore[arg-type]


def _row_values(settings: RemoteDomainSettings) -> dict[str, object]:
    return {
        "pattern": settings.pattern,
        "auto_reply": settings.auto_reply,
        "auto_forward": settings.auto_forward,
        "oof_type": settings.oof_type,
        "delivery_reports": settings.delivery_reports,
        "ndr": settings.ndr,
        "content_type": settings.content_type.value,
        "line_wrap": settings.line_wrap,
        "charset": settings.charset,
    }


class RemoteDomains(DirectoryBase):
    """The part of `Directory` that reads and changes a tenant's remote domains."""

    def remote_domains(self, scope: Scope, tenant: str) -> list[RemoteDomain]:
        """The tenant's remote domains, the Default first, then in the order they were added."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return [self._named(conn, found, s) for s in remote_domains_of(conn, found.id)]

    def get_remote_domain(self, scope: Scope, tenant: str, name: str) -> RemoteDomain:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return self._find(conn, found, name)

    def add_remote_domain(
        self, scope: Scope, tenant: str, name: str, pattern: str, change: RemoteDomainChange | None = None
    ) -> RemoteDomain:
        """Add a specific remote domain with the default settings, changed by `change`."""
        clean = name.strip()
        if not clean or len(clean) > MAX_NAME_LENGTH or any(ord(ch) < 0x20 for ch in clean):
            raise InvalidInputError(
                f"a remote domain's name must be 1 to {MAX_NAME_LENGTH} printable characters"
            )
        if clean.lower() == DEFAULT_NAME.lower():
            raise InvalidInputError(f"{DEFAULT_NAME} is the built-in remote domain `*`; choose another name")
        stored = normalize_pattern(pattern)
        if stored == DEFAULT_PATTERN:
            raise InvalidInputError(
                f"`*` is the built-in {DEFAULT_NAME} remote domain; change it with "
                f"`postroom remote-domain set {DEFAULT_NAME}`"
            )
        settings = _apply(replace(DEFAULT_SETTINGS, pattern=stored), change or RemoteDomainChange())
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            for row in conn.execute(
                select(remote_domains.c.name, remote_domains.c.pattern).where(
                    remote_domains.c.tenant_id == found.id
                )
            ):
                if row.name.lower() == clean.lower():
                    raise ConflictError(f"tenant {found.name} already has a remote domain named {row.name}")
                if row.pattern == stored:
                    raise ConflictError(
                        f"remote domain {row.name} of tenant {found.name} already covers {stored}"
                    )
            conn.execute(
                insert(remote_domains).values(
                    tenant_id=found.id, name=clean, created_at=self._clock(), **_row_values(settings)
                )
            )
            changes.tenants.add(found.id)
            return RemoteDomain(found.id, found.name, clean, settings)

    def set_remote_domain(
        self, scope: Scope, tenant: str, name: str, change: RemoteDomainChange
    ) -> RemoteDomain:
        """Change a remote domain's settings (the Default's included)."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = self._find(conn, found, name)
            settings = _apply(current.settings, change)
            values = _row_values(settings)
            if current.is_default and self._default_row(conn, found.id) is None:
                conn.execute(
                    insert(remote_domains).values(
                        tenant_id=found.id, name=DEFAULT_NAME, created_at=self._clock(), **values
                    )
                )
            else:
                conn.execute(
                    update(remote_domains)
                    .where(
                        (remote_domains.c.tenant_id == found.id)
                        & (remote_domains.c.pattern == current.settings.pattern)
                    )
                    .values(**values)
                )
            changes.tenants.add(found.id)
            return RemoteDomain(found.id, found.name, current.name, settings)

    def remove_remote_domain(self, scope: Scope, tenant: str, name: str) -> None:
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = self._find(conn, found, name)
            if current.is_default:
                raise RefusedError(
                    f"{DEFAULT_NAME} (`*`) is built in and cannot be removed; change its settings with "
                    f"`postroom remote-domain set {DEFAULT_NAME}`"
                )
            conn.execute(
                delete(remote_domains).where(
                    (remote_domains.c.tenant_id == found.id)
                    & (remote_domains.c.pattern == current.settings.pattern)
                )
            )
            changes.tenants.add(found.id)

    def remote_domain_for(self, tenant_id: int | None, domain: str) -> RemoteDomainSettings:
        """The settings that apply to mail of `tenant_id` to `domain` (mail flow, unscoped: the caller
        knows whose mail it is; None, mail of no tenant: the defaults). Cached callers use
        `CachedDirectory.remote_domain`."""
        if tenant_id is None:
            return DEFAULT_SETTINGS
        with self._db.read() as conn:
            return match_remote_domain(remote_domains_of(conn, tenant_id), domain)

    # --- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _default_row(conn: Connection, tenant_id: int) -> int | None:
        return conn.execute(
            select(remote_domains.c.id).where(
                (remote_domains.c.tenant_id == tenant_id) & (remote_domains.c.pattern == DEFAULT_PATTERN)
            )
        ).scalar_one_or_none()

    @staticmethod
    def _named(conn: Connection, tenant: Tenant, settings: RemoteDomainSettings) -> RemoteDomain:
        if settings.pattern == DEFAULT_PATTERN:
            return RemoteDomain(tenant.id, tenant.name, DEFAULT_NAME, settings)
        name = conn.execute(
            select(remote_domains.c.name).where(
                (remote_domains.c.tenant_id == tenant.id) & (remote_domains.c.pattern == settings.pattern)
            )
        ).scalar_one()
        return RemoteDomain(tenant.id, tenant.name, name, settings)

    def _find(self, conn: Connection, tenant: Tenant, name: str) -> RemoteDomain:
        """A remote domain of the tenant by name (case-insensitive) or by its pattern."""
        key = name.strip().lower()
        for settings in remote_domains_of(conn, tenant.id):
            found = self._named(conn, tenant, settings)
            if found.name.lower() == key or settings.pattern == key:
                return found
        raise NotFoundError(
            f"tenant {tenant.name} has no remote domain {name!r}; `postroom remote-domain list --tenant "
            f"{tenant.name}` shows them"
        )
