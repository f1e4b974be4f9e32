"""Directory value types: what the directory hands to the other rooms."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.model.outbound import RemoteDomainSettings


class DomainType(StrEnum):
    """How an accepted domain treats recipients the directory does not know (spec §1.2)."""

    AUTHORITATIVE = "authoritative"  # unknown recipient rejected at RCPT (DBEB)
    INTERNAL_RELAY = "internal-relay"  # unknown recipient relayed to the on-premises connector


class DomainStatus(StrEnum):
    PENDING = "pending"  # ownership not proven: receives no mail
    VERIFIED = "verified"


class RecipientKind(StrEnum):
    MAILBOX = "mailbox"
    GROUP = "group"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    id: int
    tenant_id: int
    tenant: str
    name: str  # ASCII (A-label)
    type: DomainType
    status: DomainStatus
    is_default: bool
    verification_token: str
    domain_key: str
    created_at: float
    verified_at: float | None

    @property
    def verification_record(self) -> str:
        """The TXT value that proves ownership of the domain."""
        return f"postroom-verification={self.verification_token}"

    @property
    def verification_mx(self) -> str:
        """The MX exchange that proves ownership where the DNS host cannot publish TXT at the apex
        (spec §1.1); `.invalid` (RFC 2606) so no sender can ever deliver there."""
        return f"postroom-verification-{self.verification_token}.invalid"

    @property
    def receives_mail(self) -> bool:
        return self.status is DomainStatus.VERIFIED


@dataclass(frozen=True, slots=True)
class DomainEvent:
    at: float
    event: str
    detail: str


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    tenant_id: int
    tenant: str
    kind: RecipientKind
    display_name: str
    primary_address: str
    aliases: tuple[str, ...]
    external_address: str | None
    members: tuple[str, ...]  # groups only
    has_password: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class AddressOwner:
    """Who an address belongs to: the answer of the directory at RCPT and at expansion."""

    recipient_id: int
    tenant_id: int
    kind: RecipientKind
    primary_address: str
    external_address: str | None
    quota_bytes: int | None = None  # a mailbox's size limit in octets (`quota.py`); None: no limit


class AutoForward(StrEnum):
    """The outbound spam policy's automatic forwarding to external domains (spec §10.5)."""

    AUTOMATIC = "automatic"  # the default: the service decides, and it decides off
    ON = "on"
    OFF = "off"

    @property
    def allows(self) -> bool:
        return self is AutoForward.ON


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """A tenant's organization settings for mail that leaves it."""

    external_postmaster: str  # the sender of its NDRs and system messages (spec §9)
    external_postmaster_chosen: str | None  # the setting; None: postmaster@<default domain>
    auto_forward: AutoForward


@dataclass(frozen=True, slots=True)
class RemoteDomain:
    """A tenant's remote domain: a name, and the settings that apply to mail to its pattern."""

    tenant_id: int
    tenant: str
    name: str
    settings: RemoteDomainSettings

    @property
    def is_default(self) -> bool:
        return self.settings.pattern == "*"


@dataclass(frozen=True, slots=True)
class MailboxForwarding:
    """Where a mailbox's mail is forwarded, and whether the mailbox keeps a copy."""

    forward_to: str
    keep_copy: bool
