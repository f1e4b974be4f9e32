"""The admin API's credentials: bearer tokens that act for one tenant (part of the directory service).

The operator makes a token for a tenant (`postroom api-token add NAME --tenant T`) and hands it to
that tenant's administrator; every request the admin API serves with it acts in `TenantScope(tenant)`
and so sees and changes only that tenant's data. A token is `pr_` and 43 characters of
`secrets.token_urlsafe(32)` (256 random bits); it is shown once, when made. Only its SHA-256 is
stored (`api_tokens.token_hash`): with 256 random bits a slow hash would add nothing, and a fast one
lets every request be checked with one indexed read. Names are unique per tenant, case-insensitively.

Guarantees: only the operator makes tokens; a tenant may list and remove its own (never another
tenant's: those are answered as tokens that do not exist); `authenticate_api_token` answers None for
any string that is not a live token (malformed, unknown, removed, or of a removed tenant: the rows
cascade with the tenant, whose id is never reused).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from postroom.directory.base import DirectoryBase
from postroom.directory.errors import ConflictError, InvalidInputError, NotFoundError
from postroom.model.scope import OperatorScope, Scope, TenantScope
from postroom.storage.schema import api_tokens, tenants

TOKEN_PREFIX = "pr_"
MAX_NAME_LENGTH = 64
MAX_TOKENS = 100  # per tenant
_TOKEN = re.compile(r"pr_[A-Za-z0-9_-]{43}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token as an admin sees it (never the secret, which only `add_api_token` returns)."""

    tenant_id: int
    tenant: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """Who a request acts for: the tenant of the token it presented."""

    scope: TenantScope
    tenant: str
    token: str  # the token's name, for logs


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiTokens(DirectoryBase):
    """The part of `Directory` that makes, lists, removes and checks admin API tokens."""

    def add_api_token(self, scope: OperatorScope, tenant: str, name: str) -> tuple[ApiToken, str]:
        """Make a token for `tenant`; returns it and its secret (shown once, kept only as a hash)."""
        self._require_operator(scope, "make API tokens")
        clean = name.strip()
        if not clean or len(clean) > MAX_NAME_LENGTH or _CONTROL.search(clean):
            raise InvalidInputError(f"a token's name must be 1 to {MAX_NAME_LENGTH} printable characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        with self._db.write() as conn:
            found = self._tenant(conn, scope, tenant)
            held = (
                conn.execute(select(api_tokens.c.name).where(api_tokens.c.tenant_id == found.id))
                .scalars()
                .all()
            )
            if any(existing.lower() == clean.lower() for existing in held):
                raise ConflictError(
                    f"tenant {found.name} already has an API token named {clean}; choose another"
                )
            if len(held) >= MAX_TOKENS:
                raise InvalidInputError(
                    f"tenant {found.name} has {MAX_TOKENS} API tokens, the most allowed; remove one first"
                )
            conn.execute(
                insert(api_tokens).values(
                    tenant_id=found.id,
                    name=clean,
                    name_key=clean.lower(),
                    token_hash=token_hash(secret),
                    created_at=now,
                )
            )
        return ApiToken(found.id, found.name, clean, now), secret

    def api_tokens(self, scope: Scope, tenant: str) -> list[ApiToken]:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            rows = conn.execute(
                select(api_tokens).where(api_tokens.c.tenant_id == found.id).order_by(api_tokens.c.id)
            ).all()
        return [ApiToken(found.id, found.name, row.name, row.created_at) for row in rows]

    def remove_api_token(self, scope: Scope, tenant: str, name: str) -> None:
        """Remove a token: requests presenting it are refused from then on."""
        with self._db.write() as conn:
            found = self._tenant(conn, scope, tenant)
            removed = conn.execute(
                delete(api_tokens).where(
                    (api_tokens.c.tenant_id == found.id) & (api_tokens.c.name_key == name.strip().lower())
                )
            )
            if removed.rowcount == 0:
                raise NotFoundError(
                    f"tenant {found.name} has no API token {name!r}; `postroom api-token list --tenant "
                    f"{found.name}` shows them"
                )

    def authenticate_api_token(self, secret: str) -> ApiCaller | None:
        """Whom a presented token acts for, or None (unscoped: this is how a request gets its scope)."""
        if not _TOKEN.fullmatch(secret):
            return None
        with self._db.read() as conn:
            row = conn.execute(
                select(api_tokens.c.tenant_id, api_tokens.c.name, tenants.c.name.label("tenant"))
                .join(tenants, tenants.c.id == api_tokens.c.tenant_id)
                .where(api_tokens.c.token_hash == token_hash(secret))
            ).first()
        if row is None:
            return None
        return ApiCaller(TenantScope(int(row.tenant_id)), str(row.tenant), str(row.name))
