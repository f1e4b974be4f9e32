"""Directory: the organization as data (tenants, accepted domains, recipients, addresses, groups)."""

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

__all__ = [
    "MAILBOX_FOLDERS",
    "AcceptedDomain",
    "AddressOwner",
    "ConflictError",
    "Directory",
    "DirectoryError",
    "DomainEvent",
    "DomainStatus",
    "DomainType",
    "InvalidInputError",
    "NotFoundError",
    "Recipient",
    "RecipientKind",
    "Tenant",
    "find_address",
    "find_domain",
    "group_member_addresses",
]
