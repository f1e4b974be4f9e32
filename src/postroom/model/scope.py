"""Whose data a call reads or writes: one tenant, or the service operator.

Every service call on tenant data takes a `Scope` as a required argument, and there is no default
that means "everyone": an adapter (the CLI, the admin API, an SMTP AUTH or IMAP session) must say
whose data it is acting for. `TenantScope(tenant_id)` sees and changes only that tenant's rows.
`OPERATOR` is the service operator (the node's own CLI, the scheduler): it sees every tenant, and
the rows that belong to no tenant (mail refused before any tenant was known, such as relay attempts).

Guarantees: scopes are values (frozen, hashable, comparable); `allows(tenant_id)` is the one test a
service applies to a row's owner, so a row of no tenant (None) is visible to the operator only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Acting for one tenant: its rows only."""

    tenant_id: int

    def allows(self, tenant_id: int | None) -> bool:
        return tenant_id == self.tenant_id


@dataclass(frozen=True, slots=True)
class OperatorScope:
    """Acting for the service operator: every tenant's rows, and the rows of no tenant."""

    def allows(self, tenant_id: int | None) -> bool:
        return True


OPERATOR = OperatorScope()

Scope = TenantScope | OperatorScope
