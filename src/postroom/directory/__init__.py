"""Directory: the organization as data (tenants, accepted domains and their DKIM keys, recipients,
groups, organization settings)."""

from postroom.directory.dkim import DKIM_SELECTORS, DkimKey
from postroom.directory.organization import (
    Organization,
    Postmaster,
    find_postmaster,
    group_allows_external_senders,
)
from postroom.directory.records import (
    AcceptedDomain,
    AddressOwner,
    DomainEvent,
    DomainStatus,
    DomainType,
    Recipient,
    RecipientKind,
    Tenant,
)
from postroom.directory.service import (
    MAILBOX_FOLDERS,
    ConflictError,
    Directory,
    DirectoryError,
    InvalidInputError,
    NotFoundError,
    find_address,
    find_domain,
    group_member_addresses,
)
from postroom.directory.view import REFRESH_SECONDS, CachedDirectory, ConnectionView, DirectoryView

__all__ = [
    "DKIM_SELECTORS",
    "MAILBOX_FOLDERS",
    "REFRESH_SECONDS",
    "AcceptedDomain",
    "AddressOwner",
    "CachedDirectory",
    "ConflictError",
    "ConnectionView",
    "Directory",
    "DirectoryError",
    "DirectoryView",
    "DkimKey",
    "DomainEvent",
    "DomainStatus",
    "DomainType",
    "InvalidInputError",
    "NotFoundError",
    "Organization",
    "Postmaster",
    "Recipient",
    "RecipientKind",
    "Tenant",
    "find_address",
    "find_domain",
    "find_postmaster",
    "group_allows_external_senders",
    "group_member_addresses",
]
