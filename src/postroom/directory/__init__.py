"""Directory: the organization as data (tenants, accepted domains and their DKIM keys, recipients,
groups, organization settings, sending settings and send-as)."""

from postroom.directory.base import CHANGE_LOG_GENERATIONS, CHANGE_LOG_MAX_KEYS
from postroom.directory.credentials import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, PasswordPolicy
from postroom.directory.dkim import DKIM_SELECTORS, RETIRED_KEY_SECONDS, DkimKey
from postroom.directory.errors import (
    ConflictError,
    DirectoryError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
)
from postroom.directory.lookups import find_address, find_domain, group_member_addresses
from postroom.directory.names import RESERVED_TENANT_NAMES
from postroom.directory.organization import (
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
from postroom.directory.sending import (
    MAX_MESSAGE_SIZE,
    MAX_RECIPIENTS_LIMIT,
    RestrictedSender,
    SendingSettings,
    SubmissionAccount,
    Switch,
    charge_recipients,
    find_receive_limit,
    find_submission_account,
    restricted_until,
)
from postroom.directory.service import Directory
from postroom.directory.tenants import TenantRows
from postroom.directory.view import (
    REFRESH_SECONDS,
    CachedDirectory,
    ConnectionView,
    DirectoryView,
    NotCached,
)

__all__ = [
    "CHANGE_LOG_GENERATIONS",
    "CHANGE_LOG_MAX_KEYS",
    "DKIM_SELECTORS",
    "MAX_MESSAGE_SIZE",
    "MAX_PASSWORD_LENGTH",
    "MAX_RECIPIENTS_LIMIT",
    "MIN_PASSWORD_LENGTH",
    "REFRESH_SECONDS",
    "RESERVED_TENANT_NAMES",
    "RETIRED_KEY_SECONDS",
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
    "NotCached",
    "NotFoundError",
    "PasswordPolicy",
    "Postmaster",
    "Recipient",
    "RecipientKind",
    "RefusedError",
    "RestrictedSender",
    "SendingSettings",
    "SubmissionAccount",
    "Switch",
    "Tenant",
    "TenantRows",
    "charge_recipients",
    "find_address",
    "find_domain",
    "find_postmaster",
    "find_receive_limit",
    "find_submission_account",
    "group_allows_external_senders",
    "group_member_addresses",
    "restricted_until",
]
