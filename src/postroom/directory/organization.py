"""Organization settings: each tenant's postmaster, its external postmaster address, its outbound
automatic forwarding policy, and the delivery restrictions of its groups.

These settings live here, read while mail flows (through `DirectoryView`) and changed by an admin:

- **The tenant's postmaster** (spec §9, the external postmaster address): a mailbox or group of the
  tenant that receives `postmaster@` each of its verified domains. Until the tenant chooses one, it
  is the tenant's first mailbox (the lowest id): there are no admin roles yet to say who administers
  the tenant, and the first mailbox is the one its administrator usually creates first. An explicit
  `postmaster@` mailbox or alias always wins over this setting (routing asks the address first).
- **The external postmaster address** (spec §9): the sender of the tenant's NDRs and system messages
  to outside senders. Blank (the default) means `postmaster@<the tenant's default domain>`; any
  syntactically valid address may be chosen, no mailbox need stand behind it.
  `find_external_postmaster` is the lookup the queue's DSN round uses.
- **Automatic forwarding** (spec §10.5, the outbound spam policy): `automatic` (the default, which
  means off), `on`, `off`. Forwarding to an external domain is allowed only when it is `on` and the
  remote domain of the destination allows automatic forwarding (`routing.categorize`).
- **A group's external senders** (spec §8, `RequireSenderAuthenticationEnabled`, default true): a
  group accepts mail only from senders inside its organization unless it allows external senders.

Lookups (`find_postmaster`, `group_allows_external_senders`) take the caller's connection, like the
directory's other mail-flow lookups (`lookups.py`), and are not scoped. The admin's reads and changes
(`OrganizationSettings`, a part of `Directory`) take the caller's `Scope`; another tenant's tenant or
group is answered as one that does not exist. A change is logged for caching nodes like every
directory write: a postmaster choice under the tenant, a group's restriction under the group.

Errors: `DirectoryError` subclasses with a sentence that says what is wrong and what to do; nothing
is half-written when one is raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from postroom.directory.base import DirectoryBase, parse_address
from postroom.directory.errors import InvalidInputError
from postroom.directory.lookups import find_address
from postroom.directory.records import AddressOwner, AutoForward, OutboundSettings, RecipientKind
from postroom.model import Address
from postroom.model.scope import Scope
from postroom.storage.schema import (
    addresses,
    domains,
    group_delivery_restrictions,
    organization_settings,
    recipients,
)


@dataclass(frozen=True, slots=True)
class Postmaster:
    """Who receives a tenant's postmaster mail, and whether the tenant chose it."""

    address: str | None  # the mailbox or group that receives it; None: the tenant has no mailbox yet
    chosen: str | None  # the setting; None: not chosen, the first mailbox stands in


def _chosen_postmaster(conn: Connection, tenant_id: int) -> str | None:
    return conn.execute(
        select(organization_settings.c.postmaster_address).where(
            organization_settings.c.tenant_id == tenant_id
        )
    ).scalar_one_or_none()


def find_postmaster(conn: Connection, tenant_id: int) -> AddressOwner | None:
    """The recipient that receives `postmaster@` the tenant's domains: the chosen one while it still
    exists in the tenant, else the tenant's first mailbox; None when the tenant has no mailbox."""
    chosen = _chosen_postmaster(conn, tenant_id)
    if chosen:
        owner = find_address(conn, Address.parse(chosen).key)
        if owner is not None and owner.tenant_id == tenant_id:
            return owner
    first = conn.execute(
        select(addresses.c.key)
        .join(recipients, recipients.c.id == addresses.c.recipient_id)
        .where(
            (recipients.c.tenant_id == tenant_id)
            & (recipients.c.kind == RecipientKind.MAILBOX.value)
            & addresses.c.is_primary
        )
        .order_by(recipients.c.id)
        .limit(1)
    ).scalar_one_or_none()
    return find_address(conn, first) if first is not None else None


def find_external_postmaster(conn: Connection, tenant_id: int) -> str | None:
    """The sender of the tenant's NDRs: the chosen address, else postmaster@<its default domain>;
    None when the tenant does not exist (removed)."""
    chosen = conn.execute(
        select(organization_settings.c.external_postmaster).where(
            organization_settings.c.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    if chosen:
        return str(chosen)
    default = conn.execute(
        select(domains.c.name).where((domains.c.tenant_id == tenant_id) & domains.c.is_default)
    ).scalar_one_or_none()
    return f"postmaster@{default}" if default is not None else None


def find_auto_forward(conn: Connection, tenant_id: int) -> AutoForward:
    """The tenant's outbound automatic forwarding policy (default: automatic, which is off)."""
    value = conn.execute(
        select(organization_settings.c.auto_forward).where(organization_settings.c.tenant_id == tenant_id)
    ).scalar_one_or_none()
    return AutoForward(value) if value else AutoForward.AUTOMATIC


def _store_setting(conn: Connection, tenant_id: int, **values: object) -> None:
    """Set some columns of the tenant's settings row, creating the row when it has none."""
    table = organization_settings
    done = conn.execute(update(table).where(table.c.tenant_id == tenant_id).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(table).values(tenant_id=tenant_id, **values))


def group_allows_external_senders(conn: Connection, group_id: int) -> bool:
    """True when the group accepts mail from senders outside its organization (default: False)."""
    allowed = conn.execute(
        select(group_delivery_restrictions.c.allow_external_senders).where(
            group_delivery_restrictions.c.group_id == group_id
        )
    ).scalar_one_or_none()
    return bool(allowed)


class OrganizationSettings(DirectoryBase):
    """The part of `Directory` that reads and changes the organization settings."""

    # --- postmaster -------------------------------------------------------------------------------
    def postmaster(self, scope: Scope, tenant: str) -> Postmaster:
        with self._db.read() as conn:
            tenant_id = self._tenant(conn, scope, tenant).id
            owner = find_postmaster(conn, tenant_id)
            return Postmaster(owner.primary_address if owner else None, _chosen_postmaster(conn, tenant_id))

    def set_postmaster(self, scope: Scope, tenant: str, address: str | None) -> Postmaster:
        """Choose the tenant's postmaster (a mailbox or group of the tenant); None: its first mailbox."""
        with self._write() as (conn, changes):
            tenant_id = self._tenant(conn, scope, tenant).id
            chosen = None
            if address:
                owner = self._owner(conn, scope, address)
                if owner.tenant_id != tenant_id or owner.kind is RecipientKind.CONTACT:
                    raise InvalidInputError(
                        f"{address} is not a mailbox or group of tenant {tenant}; the postmaster must be one"
                    )
                chosen = owner.primary_address
            _store_setting(conn, tenant_id, postmaster_address=chosen)
            changes.tenants.add(tenant_id)
            found = find_postmaster(conn, tenant_id)
            return Postmaster(found.primary_address if found else None, chosen)

    # --- outbound: the external postmaster, automatic forwarding --------------------------------
    def outbound_settings(self, scope: Scope, tenant: str) -> OutboundSettings:
        with self._db.read() as conn:
            return self._outbound(conn, self._tenant(conn, scope, tenant).id)

    def set_external_postmaster(self, scope: Scope, tenant: str, address: str | None) -> OutboundSettings:
        """Choose the sender of the tenant's NDRs (any valid address); None or "": the default."""
        chosen = str(parse_address(address)) if address else None
        with self._write() as (conn, changes):
            tenant_id = self._tenant(conn, scope, tenant).id
            _store_setting(conn, tenant_id, external_postmaster=chosen)
            changes.tenants.add(tenant_id)
            return self._outbound(conn, tenant_id)

    def set_auto_forward(self, scope: Scope, tenant: str, policy: str) -> OutboundSettings:
        """Set the outbound automatic forwarding policy: automatic (= off), on, or off."""
        try:
            value = AutoForward(policy.strip().lower())
        except ValueError:
            known = ", ".join(p.value for p in AutoForward)
            raise InvalidInputError(f"automatic forwarding {policy!r} is not one of: {known}") from None
        with self._write() as (conn, changes):
            tenant_id = self._tenant(conn, scope, tenant).id
            _store_setting(conn, tenant_id, auto_forward=value.value)
            changes.tenants.add(tenant_id)
            return self._outbound(conn, tenant_id)

    def external_postmaster(self, tenant_id: int | None) -> str:
        """The sender of a DSN about mail of `tenant_id` (mail flow, unscoped: the queue knows whose
        mail it is): the tenant's external postmaster; postmaster@<service domain> for mail of no
        tenant or of a tenant that is gone."""
        if tenant_id is not None:
            with self._db.read() as conn:
                found = find_external_postmaster(conn, tenant_id)
            if found is not None:
                return found
        return f"postmaster@{self.service_domain}"

    @staticmethod
    def _outbound(conn: Connection, tenant_id: int) -> OutboundSettings:
        chosen = conn.execute(
            select(organization_settings.c.external_postmaster).where(
                organization_settings.c.tenant_id == tenant_id
            )
        ).scalar_one_or_none()
        return OutboundSettings(
            external_postmaster=find_external_postmaster(conn, tenant_id) or "",
            external_postmaster_chosen=chosen or None,
            auto_forward=find_auto_forward(conn, tenant_id),
        )

    # --- groups -----------------------------------------------------------------------------------
    def allows_external_senders(self, scope: Scope, group: str) -> bool:
        with self._db.read() as conn:
            return group_allows_external_senders(conn, self._group(conn, scope, group))

    def set_external_senders(self, scope: Scope, group: str, allowed: bool) -> None:
        """Let the group accept mail from outside its organization (True), or only from inside (False)."""
        with self._write() as (conn, changes):
            group_id = self._group(conn, scope, group)
            table = group_delivery_restrictions
            conn.execute(delete(table).where(table.c.group_id == group_id))
            conn.execute(insert(table).values(group_id=group_id, allow_external_senders=allowed))
            changes.groups.add(group_id)

    def _group(self, conn: Connection, scope: Scope, address: str) -> int:
        owner = self._owner(conn, scope, address)
        if owner.kind is not RecipientKind.GROUP:
            raise InvalidInputError(f"{owner.primary_address} is not a group")
        return owner.recipient_id
