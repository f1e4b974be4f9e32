"""Protection policies as values: what a tenant chose for anti-spam, anti-malware and its connection filter.

A tenant has any number of custom policies of each kind plus the built-in **Default** (spec §10.1):
for one recipient, the enabled custom policy of the highest priority (0 highest) whose recipient
filters match wins; the Default applies when none does. Within a filter (users, groups, domains) the
values are OR-ed; the filters present are AND-ed. `choose` implements that; the directory stores the
policies (`directory.protection`) and hands them out as a `TenantProtection`.

The defaults are the spec's (§10.3, §10.4, §10.6): Spam, HCS and Bulk to Junk, Phish and HPhish to
quarantine (HPhish quarantine forced), bulk threshold 7 with bulk marked as spam, retention 30 days,
the common attachment filter on with its file types and quarantine as its action. A DMARC failure
whose domain asks p=reject is marked spoof (`oreject`) unless the tenant honours DMARC policies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from postroom.model.verdicts import FilterAction

DEFAULT_POLICY = "Default"

# spec §10.3: the common attachments filter's default file types.
_TYPES = """ace apk app appx ani arj bat cab cmd com deb dex dll docm elf exe hta img iso jar jnlp kext lha
lib
library lnk lzh macho msc msi msix msp mst pif ppa ppam reg rev scf scr sct sys uif vb vbe vbs vxd wsc wsf wsh
xll xz z"""
COMMON_ATTACHMENT_TYPES = tuple(_TYPES.split())

# spec §10.6: built-in quarantine policies (who may do what with a quarantined message).
ADMIN_ONLY = "AdminOnlyAccessPolicy"  # malware, high-confidence phish, blocked file types
FULL_ACCESS = "DefaultFullAccessPolicy"  # spam, HCS, phish, bulk, spoof: users may release their own


@dataclass(frozen=True, slots=True)
class RecipientFilter:
    """Which recipients a custom policy applies to; empty filters are absent (not "nobody")."""

    users: frozenset[str] = frozenset()  # addresses, lower case
    # Group filters, lower case: the groups' own addresses and (as the directory loads them for mail
    # flow) every address of every member they reach, nested groups followed.
    groups: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()  # recipient domains, lower case A-labels

    def matches(self, recipient: str, member_of: Iterable[str] = ()) -> bool:
        recipient = recipient.lower()
        domain = recipient.rpartition("@")[2]
        tests = []
        if self.users:
            tests.append(recipient in self.users)
        if self.groups:
            tests.append(recipient in self.groups or any(group.lower() in self.groups for group in member_of))
        if self.domains:
            tests.append(domain in self.domains)
        return bool(tests) and all(tests)


@dataclass(frozen=True, slots=True)
class SenderList:
    """Allowed or blocked senders and domains (of a policy, or a mailbox's safe and blocked senders)."""

    addresses: frozenset[str] = frozenset()  # lower case
    domains: frozenset[str] = frozenset()  # lower case; a domain covers its subdomains too

    def matches(self, sender: str) -> bool:
        sender = sender.lower()
        if not sender:
            return False
        if sender in self.addresses:
            return True
        domain = sender.rpartition("@")[2]
        return any(domain == d or domain.endswith("." + d) for d in self.domains)


@dataclass(frozen=True, slots=True)
class AntiSpamPolicy:
    name: str = DEFAULT_POLICY
    priority: int | None = None  # None: the Default (runs last)
    recipients: RecipientFilter = field(default_factory=RecipientFilter)
    spam_action: FilterAction = FilterAction.JUNK
    high_confidence_spam_action: FilterAction = FilterAction.JUNK
    phish_action: FilterAction = FilterAction.QUARANTINE
    high_confidence_phish_action: FilterAction = FilterAction.QUARANTINE  # forced: only quarantine
    bulk_action: FilterAction = FilterAction.JUNK
    spoof_action: FilterAction = FilterAction.JUNK  # DMARC failure marked spoof (oreject and p=quarantine)
    bulk_threshold: int = 7  # BCL at or over it is bulk (Default 7, Standard 6, Strict 5)
    mark_bulk_as_spam: bool = True  # bulk at or over the threshold becomes SCL 6 and gets the Bulk action
    junk_threshold: int = 5  # SCL at or over it is spam (5-6 spam, 8-9 HCS; spec §10.4)
    x_header: str = "X-This-Is-Spam"  # the X-header action's field name (value fixed by the spec)
    subject_prefix: str = "[SPAM] "  # the prepend-subject action's text
    redirect_to: str = ""  # the redirect action's address
    quarantine_retention_days: int = 30  # 1-30
    allowed: SenderList = field(default_factory=SenderList)  # SFV:SKA (must authenticate if our domain)
    blocked: SenderList = field(default_factory=SenderList)  # SFV:SKB
    honor_dmarc: bool = False  # False: p=reject failures are marked spoof (oreject), as Exchange does
    dmarc_reject_action: FilterAction = FilterAction.REJECT  # when honour_dmarc: p=reject
    dmarc_quarantine_action: FilterAction = FilterAction.QUARANTINE  # when honour_dmarc: p=quarantine
    trusted_arc_sealers: frozenset[str] = frozenset()  # ARC sealer domains whose results are honoured


@dataclass(frozen=True, slots=True)
class AntiMalwarePolicy:
    name: str = DEFAULT_POLICY
    priority: int | None = None
    recipients: RecipientFilter = field(default_factory=RecipientFilter)
    file_filter: bool = True  # the common attachment filter
    file_types: tuple[str, ...] = COMMON_ATTACHMENT_TYPES
    file_action: FilterAction = FilterAction.QUARANTINE  # or REJECT (an NDR)
    quarantine_retention_days: int = 30


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """A tenant's connection filter (one per tenant, the Default): IP Allow and Block lists (spec §10.2).

    Entries are single addresses, `a-b` ranges, or CIDR /24-/32 (IPv6 /48-/128); at most 1,273 each."""

    ip_allow: tuple[str, ...] = ()
    ip_block: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TenantProtection:
    """Everything protection needs to know about one tenant's choices."""

    tenant_id: int
    antispam: tuple[AntiSpamPolicy, ...] = ()  # custom policies, highest priority (lowest number) first
    antispam_default: AntiSpamPolicy = field(default_factory=AntiSpamPolicy)
    antimalware: tuple[AntiMalwarePolicy, ...] = ()
    antimalware_default: AntiMalwarePolicy = field(default_factory=AntiMalwarePolicy)
    connection: ConnectionPolicy = field(default_factory=ConnectionPolicy)

    def antispam_for(self, recipient: str, member_of: Iterable[str] = ()) -> AntiSpamPolicy:
        return choose(self.antispam, self.antispam_default, recipient, member_of)

    def antimalware_for(self, recipient: str, member_of: Iterable[str] = ()) -> AntiMalwarePolicy:
        return choose(self.antimalware, self.antimalware_default, recipient, member_of)


P = TypeVar("P", AntiSpamPolicy, AntiMalwarePolicy)


def choose(custom: tuple[P, ...], default: P, recipient: str, member_of: Iterable[str] = ()) -> P:
    """The policy for `recipient`: the first custom one (by priority) that matches, else the Default."""
    groups = tuple(member_of)
    for policy in sorted(custom, key=lambda p: p.priority if p.priority is not None else 1 << 30):
        if policy.recipients.matches(recipient, groups):
            return policy
    return default


@dataclass(frozen=True, slots=True)
class MailboxSenderLists:
    """A mailbox's own safe and blocked senders (Outlook's junk settings): SFV:SFE and SFV:BLK."""

    safe: SenderList = field(default_factory=SenderList)
    blocked: SenderList = field(default_factory=SenderList)
