"""The directory lookups mail flow makes inside the caller's transaction (RCPT, expansion, commit).

`find_domain`, `find_address` and `group_member_addresses` take the caller's connection, so RCPT
resolution and group expansion see the directory as their own transaction does. They are not
scoped: mail flow asks "whose is this address?" before any tenant is known, and the answer says
which tenant it is. The owner carries the mailbox's quota, so RCPT learns it with no query of its own.
"""

from __future__ import annotations

from sqlalchemy import Connection, Row, select

from postroom.directory.records import AcceptedDomain, AddressOwner, DomainStatus, DomainType, RecipientKind
from postroom.storage.schema import addresses, domains, group_members, recipients, tenants

DOMAIN_COLUMNS = (*domains.c, tenants.c.name.label("tenant"))


def domain_from_row(row: Row[tuple[object, ...]]) -> AcceptedDomain:
    r = row._mapping
    return AcceptedDomain(
        id=r["id"],
        tenant_id=r["tenant_id"],
        tenant=r["tenant"],
        name=r["name"],
        type=DomainType(r["type"]),
        status=DomainStatus(r["status"]),
        is_default=bool(r["is_default"]),
        verification_token=r["verification_token"],
        domain_key=r["domain_key"],
        created_at=r["created_at"],
        verified_at=r["verified_at"],
    )


def find_domain(conn: Connection, name: str) -> AcceptedDomain | None:
    """The accepted domain with this ASCII name, verified or not."""
    row = conn.execute(
        select(*DOMAIN_COLUMNS)
        .join(tenants, tenants.c.id == domains.c.tenant_id)
        .where(domains.c.name == name)
    ).first()
    return domain_from_row(row) if row else None


def find_address(conn: Connection, key: str) -> AddressOwner | None:
    """The recipient that owns the address `key` (casefolded local @ ASCII domain)."""
    owner = addresses.alias("owner")
    primary = addresses.alias("primary")
    row = conn.execute(
        select(
            recipients.c.id,
            recipients.c.tenant_id,
            recipients.c.kind,
            primary.c.address,
            recipients.c.external_address,
            recipients.c.quota_bytes,
        )
        .select_from(owner)
        .join(recipients, recipients.c.id == owner.c.recipient_id)
        .join(primary, (primary.c.recipient_id == recipients.c.id) & primary.c.is_primary)
        .where(owner.c.key == key)
    ).first()
    if row is None:
        return None
    return AddressOwner(
        recipient_id=row[0],
        tenant_id=row[1],
        kind=RecipientKind(row[2]),
        primary_address=row[3],
        external_address=row[4],
        quota_bytes=None if row[5] is None else int(row[5]),
    )


def group_member_addresses(conn: Connection, group_id: int) -> list[str]:
    return list(
        conn.execute(
            select(group_members.c.member_address)
            .where(group_members.c.group_id == group_id)
            .order_by(group_members.c.member_key)
        ).scalars()
    )


def recipient_address_keys(conn: Connection, recipient_id: int) -> set[str]:
    """Every address key of one recipient (what a cache must forget when the recipient changes)."""
    return set(
        conn.execute(select(addresses.c.key).where(addresses.c.recipient_id == recipient_id)).scalars()
    )
