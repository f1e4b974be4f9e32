"""Protection: the filtering stack on every message (spec §10): connection filter, authentication
(SPF, DKIM, DMARC, ARC), anti-malware, anti-spam, and the merge of their verdicts into one action per
recipient. Each check takes facts and returns a typed verdict (`model.verdicts`); the policies that
turn verdicts into actions are values (`model.policy`); nothing here writes to the database."""

from postroom.protection.connection import (
    ConnectionCheck,
    ConnectionFilter,
    RateLimits,
    RecipientCheck,
    TenantLists,
    client_key,
    parse_tenant_lists,
)

__all__ = [
    "ConnectionCheck",
    "ConnectionFilter",
    "RateLimits",
    "RecipientCheck",
    "TenantLists",
    "client_key",
    "parse_tenant_lists",
]
