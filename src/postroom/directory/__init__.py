"""Directory: the organization as data (tenants, accepted domains and their DKIM keys, recipients,
groups, organization settings, sending settings and send-as, remote domains, mailbox forwarding)."""

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
from postroom.directory.forwarding import find_forwarding
from postroom.directory.lookups import find_address, find_domain, group_member_addresses
from postroom.directory.names import RESERVED_TENANT_NAMES
from postroom.directory.organization import (
    Postmaster,
    find_auto_forward,
    find_external_postmaster,
    find_postmaster,
    group_allows_external_senders,
)
from postroom.directory.records import (
    AcceptedDomain,
    AddressOwner,
    AutoForward,
    DomainEvent,
    DomainStatus,
    DomainType,
    MailboxForwarding,
    OutboundSettings,
    Recipient,
    RecipientKind,
    RemoteDomain,
    Tenant,
)
from postroom.directory.remote_domains import (
    DEFAULT_NAME as DEFAULT_REMOTE_DOMAIN,
)
from postroom.directory.remote_domains import (
    RemoteDomainChange,
    match_remote_domain,
    remote_domains_of,
)
from postroom.directory.sending import (
    MAX_MESSAGE_SIZE,
    MAX_RECIPIENTS_LIMIT,
    RestrictedSender,
    SendingSettings,
    SubmissionAccount,
    Switch,
    charge_recipients,
    charge_spam,
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
    "DEFAULT_REMOTE_DOMAIN",
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
    "AutoForward",
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
    "MailboxForwarding",
    "NotCached",
    "NotFoundError",
    "OutboundSettings",
    "PasswordPolicy",
    "Postmaster",
    "Recipient",
    "RecipientKind",
    "RefusedError",
    "RemoteDomain",
    "RemoteDomainChange",
    "RestrictedSender",
    "SendingSettings",
    "SubmissionAccount",
    "Switch",
    "Tenant",
    "TenantRows",
    "charge_recipients",
    "charge_spam",
    "find_address",
    "find_auto_forward",
    "find_domain",
    "find_external_postmaster",
    "find_forwarding",
    "find_postmaster",
    "find_receive_limit",
    "find_submission_account",
    "group_allows_external_senders",
    "group_member_addresses",
    "match_remote_domain",
    "remote_domains_of",
    "restricted_until",
]
