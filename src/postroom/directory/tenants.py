"""Tenants and their accepted domains: add, list, verify, remove (part of the directory service).

Rules enforced here, whoever calls: a tenant name is one DNS label the service does not use itself
(`names.tenant_label`); a tenant's default domain `<name>.<service domain>` is made with it,
verified; an accepted domain belongs to one tenant and follows `names.accepted_domain_name`.

Subdomains of a verified domain belong to its tenant: `sales.contoso.com` is refused when
`contoso.com` is a verified accepted domain of another tenant, and only the owner tenant may add it
(the owner of a DNS zone is the owner of the names under it; without this, one tenant could
claim mail for another's subdomains while its ownership proof is pending). The refusal to a tenant
does not name the other tenant.

Only the service operator creates and removes tenants and adds a domain as verified without proof;
a tenant scope sees and changes its own tenant and domains only.

Removal: `delete_tenant` deletes the tenant's directory rows (domains, their history and DKIM keys,
recipients, addresses, group members) in the caller's transaction; `app.remove_tenant` runs it
together with the other rooms' removals (mail, queue, trace) in one transaction. Rows are deleted,
not tombstoned: tenant ids are never reused (AUTOINCREMENT), so nothing can come back, and a
removed tenant's data is not kept past its removal.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from postroom.directory.base import DirectoryBase, DirectoryChanges, log_changes
from postroom.directory.domain_key import derive_domain_key
from postroom.directory.errors import ConflictError, InvalidInputError
from postroom.directory.lookups import DOMAIN_COLUMNS, domain_from_row, find_domain
from postroom.directory.names import accepted_domain_name, parent_domains, tenant_label
from postroom.directory.records import AcceptedDomain, DomainEvent, DomainStatus, DomainType, Tenant
from postroom.model.scope import OperatorScope, Scope
from postroom.storage.schema import addresses, domain_history, domains, recipients, tenants


@dataclass(frozen=True, slots=True)
class TenantRows:
    """What removing a tenant deleted from the directory."""

    tenant: Tenant
    domains: int
    recipients: int


class TenantsAndDomains(DirectoryBase):
    reserved_names: frozenset[str]

    # --- tenants ----------------------------------------------------------------------------------
    def add_tenant(self, scope: OperatorScope, name: str) -> Tenant:
        """Create a tenant with its default domain `<name>.<service domain>`, verified."""
        self._require_operator(scope, "add tenants")
        label = tenant_label(name, self.service_domain, self.reserved_names)
        now = self._clock()
        with self._write() as (conn, changes):
            if conn.execute(select(tenants.c.id).where(tenants.c.name == label)).first():
                raise ConflictError(f"tenant {label!r} already exists")
            default_domain = f"{label}.{self.service_domain}"
            if find_domain(conn, default_domain):
                raise ConflictError(f"the domain {default_domain} is already an accepted domain")
            created = conn.execute(insert(tenants).values(name=label, created_at=now))
            tenant_id: int = created.inserted_primary_key[0]  # type: ignore[index]
            self._insert_domain(
                conn,
                changes,
                tenant_id,
                default_domain,
                DomainType.AUTHORITATIVE,
                verified=True,
                is_default=True,
                why="default domain of the tenant",
            )
        return Tenant(id=tenant_id, name=label, created_at=now)

    def list_tenants(self, scope: Scope) -> list[Tenant]:
        with self._db.read() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.name)).all()
        return [Tenant(id=r.id, name=r.name, created_at=r.created_at) for r in rows if scope.allows(r.id)]

    def get_tenant(self, scope: Scope, name: str) -> Tenant:
        with self._db.read() as conn:
            return self._tenant(conn, scope, name)

    def delete_tenant(self, conn: Connection, scope: OperatorScope, name: str) -> TenantRows:
        """Delete a tenant's directory rows in the caller's transaction (see `app.remove_tenant`)."""
        self._require_operator(scope, "remove tenants")
        tenant = self._tenant(conn, scope, name)
        changes = DirectoryChanges()
        changes.domains.update(
            conn.execute(select(domains.c.name).where(domains.c.tenant_id == tenant.id)).scalars()
        )
        owned = select(recipients.c.id).where(recipients.c.tenant_id == tenant.id)
        changes.addresses.update(
            conn.execute(select(addresses.c.key).where(addresses.c.recipient_id.in_(owned))).scalars()
        )
        recipient_ids = list(conn.execute(owned).scalars())
        changes.groups.update(recipient_ids)
        changes.connectors.add(tenant.id)  # the service's inbound table held its connectors
        conn.execute(delete(tenants).where(tenants.c.id == tenant.id))  # the rest cascades
        log_changes(conn, changes)
        return TenantRows(tenant, len(changes.domains), len(recipient_ids))

    # --- accepted domains -------------------------------------------------------------------------
    def add_domain(
        self,
        scope: Scope,
        name: str,
        tenant: str,
        domain_type: DomainType = DomainType.AUTHORITATIVE,
        *,
        verified: bool = False,
    ) -> AcceptedDomain:
        """Add an accepted domain, pending until its ownership is verified (or `verified`, operator only)."""
        if verified:
            self._require_operator(scope, "add a domain as verified without its ownership proof")
        ascii_name = accepted_domain_name(name, self.service_domain)
        with self._write() as (conn, changes):
            owner = self._tenant(conn, scope, tenant)
            existing = find_domain(conn, ascii_name)
            if existing:
                whose = (
                    f"tenant {existing.tenant!r}" if scope.allows(existing.tenant_id) else "another tenant"
                )
                raise ConflictError(f"{ascii_name} is already an accepted domain of {whose}")
            for parent in parent_domains(ascii_name):
                above = find_domain(conn, parent)
                if above and above.status is DomainStatus.VERIFIED and above.tenant_id != owner.id:
                    raise InvalidInputError(
                        f"{ascii_name} is under {parent}, a verified accepted domain of another tenant; "
                        f"only the tenant that owns {parent} can add its subdomains"
                    )
            why = (
                "added as verified by the service administrator"
                if verified
                else "added, pending verification"
            )
            self._insert_domain(
                conn, changes, owner.id, ascii_name, domain_type, verified=verified, is_default=False, why=why
            )
            domain = find_domain(conn, ascii_name)
        assert domain is not None
        return domain

    def _insert_domain(
        self,
        conn: Connection,
        changes: DirectoryChanges,
        tenant_id: int,
        name: str,
        domain_type: DomainType,
        *,
        verified: bool,
        is_default: bool,
        why: str,
    ) -> int:
        now = self._clock()

        def is_taken(key: str) -> bool:
            return conn.execute(select(domains.c.id).where(domains.c.domain_key == key)).first() is not None

        domain_id: int = conn.execute(
            insert(domains).values(
                tenant_id=tenant_id,
                name=name,
                type=domain_type.value,
                status=(DomainStatus.VERIFIED if verified else DomainStatus.PENDING).value,
                is_default=is_default,
                verification_token=secrets.token_hex(12),
                domain_key=derive_domain_key(name, is_taken),
                created_at=now,
                verified_at=now if verified else None,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(insert(domain_history).values(domain_id=domain_id, at=now, event="added", detail=why))
        changes.domains.add(name)
        return domain_id

    def list_domains(self, scope: Scope, tenant: str | None = None) -> list[AcceptedDomain]:
        with self._db.read() as conn:
            query = select(*DOMAIN_COLUMNS).join(tenants, tenants.c.id == domains.c.tenant_id)
            if tenant is not None:
                query = query.where(domains.c.tenant_id == self._tenant(conn, scope, tenant).id)
            rows = conn.execute(query.order_by(tenants.c.name, domains.c.name)).all()
        found = [domain_from_row(r) for r in rows]
        return [domain for domain in found if scope.allows(domain.tenant_id)]

    def get_domain(self, scope: Scope, name: str) -> AcceptedDomain:
        with self._db.read() as conn:
            return self._domain(conn, scope, name)

    def domain_history(self, scope: Scope, name: str) -> list[DomainEvent]:
        with self._db.read() as conn:
            domain = self._domain(conn, scope, name)
            rows = conn.execute(
                select(domain_history)
                .where(domain_history.c.domain_id == domain.id)
                .order_by(domain_history.c.at, domain_history.c.id)
            ).all()
        return [DomainEvent(at=r.at, event=r.event, detail=r.detail) for r in rows]

    def mark_verified(self, scope: Scope, name: str, how: str) -> AcceptedDomain:
        with self._write() as (conn, changes):
            domain = self._domain(conn, scope, name)
            if domain.status is not DomainStatus.VERIFIED:
                now = self._clock()
                conn.execute(
                    update(domains)
                    .where(domains.c.id == domain.id)
                    .values(status=DomainStatus.VERIFIED.value, verified_at=now)
                )
                conn.execute(
                    insert(domain_history).values(domain_id=domain.id, at=now, event="verified", detail=how)
                )
                changes.domains.add(domain.name)
            verified = find_domain(conn, domain.name)
        assert verified is not None
        return verified

    def record_domain_event(self, scope: Scope, name: str, event: str, detail: str) -> None:
        with self._write() as (conn, _):
            domain = self._domain(conn, scope, name)
            conn.execute(
                insert(domain_history).values(
                    domain_id=domain.id, at=self._clock(), event=event, detail=detail
                )
            )

    def remove_domain(self, scope: Scope, name: str) -> None:
        """Remove an accepted domain that no address uses any more."""
        with self._write() as (conn, changes):
            domain = self._domain(conn, scope, name)
            if domain.is_default:
                raise ConflictError(
                    f"{domain.name} is the default domain of tenant {domain.tenant!r}; remove the tenant"
                )
            used = conn.execute(select(func.count()).where(addresses.c.domain_id == domain.id)).scalar_one()
            if used:
                raise ConflictError(
                    f"{used} address(es) still use {domain.name}; remove or change them first "
                    f"(`postroom mailbox list --domain {domain.name}`)"
                )
            conn.execute(delete(domains).where(domains.c.id == domain.id))
            changes.domains.add(domain.name)
