"""Protection policies as directory data: a tenant's anti-spam, anti-malware and connection filter
policies, and each mailbox's safe and blocked senders (`model.policy` values; spec §10.1-10.4).

**Policies.** Every tenant has the built-in **Default** anti-spam and anti-malware policy: it applies
to everyone no custom policy of its kind takes, runs last, cannot be removed, renamed, disabled or
given recipient filters; until it is changed it has no row and holds the defaults of
`model.policy`. A tenant adds any number (up to `MAX_POLICIES` per kind) of custom policies, each
with a name unique in the tenant and kind, a priority, and recipient filters: users (mailboxes and
contacts), groups, and accepted domains, all of that tenant; values within a filter are OR-ed, the
filters present are AND-ed, and a custom policy has at least one filter. Priorities of a kind are
always 0 (highest) to n-1, as Exchange keeps them: a policy added or moved to an occupied priority
pushes that one and those below it down by one, a removed one closes its gap. A disabled policy
keeps its priority and applies to no one.

Stored: `protection_policies` (storage/schema.py, step 6), one row per custom policy and per changed
Default; `settings` is a JSON object of the values that differ from the defaults (keys as the
`model.policy` field names), `users` and `groups` the recipients' ids (so renaming a recipient or
changing its aliases keeps the policy on it), `domains` the domain names. The connection filter is
the tenant's one `connection` row (name Default) with its IP Allow and Block lists.

**Validation** (`InvalidInputError`, a sentence that says what to do): each verdict's action from
the spec §10.4 table (`ALLOWED_ACTIONS`: high-confidence phish only quarantine, bulk may be inbox,
phish never inbox; a redirect action needs `redirect_to`); an X-header name that is not a header
field name (a space or a colon in it) falls back to `X-This-Is-Spam`, as Exchange does; quarantine
retention 1-30 days; bulk threshold 1-9; junk threshold 1-9; trusted ARC sealers are domain names;
file types are extensions; IP entries are a single address, an `a-b` range of at most a /24's
worth (IPv6: a /48's), or a CIDR network /24-/32 (IPv6 /48-/128), at most `MAX_IP_ENTRIES` per
list. Recipients named in filters must be the tenant's own: another tenant's address is answered as
"no such recipient in this tenant", exactly like an address nobody has.

**Mailbox safe and blocked senders** (Outlook's junk settings): addresses or domains, at most
`MAX_SENDER_ENTRIES` per list per mailbox; an entry is on one list at most.

Scope: every read and change takes the caller's `Scope`; another tenant's policies and mailboxes
are answered as ones that do not exist. A policy change is logged under the tenant (`ChangeKind.TENANT`)
and a sender list change under the mailbox (`ChangeKind.RECIPIENT`), so `view.CachedDirectory` drops
its entry (and the entries that name recipients when any address changes). A tenant's removal
removes its rows (foreign-key cascade), and a new tenant that reuses its name sees the defaults.

Mail flow reads the typed values through `load_tenant_protection(conn, tenant_id)` and
`load_sender_lists(conn, mailbox_id)` (one or two indexed queries each, no validation: the rows were
checked when written; a stored value this version cannot read is logged and its default used).
In the `TenantProtection` they return, a user or group filter holds every address (lower case) of
each recipient it names, and a recipient since removed is a name that matches no address: a policy
never widens to everyone because the recipients it named are gone.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum, StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from postroom.directory.base import DirectoryBase, parse_address
from postroom.directory.errors import ConflictError, InvalidInputError, NotFoundError, RefusedError
from postroom.directory.lookups import find_address, find_domain, group_member_addresses
from postroom.directory.records import RecipientKind, Tenant
from postroom.model import AddressError, normalize_domain
from postroom.model.policy import (
    DEFAULT_POLICY,
    AntiMalwarePolicy,
    AntiSpamPolicy,
    ConnectionPolicy,
    MailboxSenderLists,
    RecipientFilter,
    SenderList,
    TenantProtection,
)
from postroom.model.scope import Scope
from postroom.model.verdicts import FilterAction
from postroom.storage.prepared import PreparedStatement
from postroom.storage.schema import addresses, mailbox_sender_lists, protection_policies

log = logging.getLogger(__name__)

MAX_POLICIES = 300  # custom policies of one kind per tenant
MAX_NAME_LENGTH = 64
MAX_FILTER_ENTRIES = 1000  # users, groups or domains in one recipient filter
# A policy's allowed or blocked senders, or domains; a mailbox's safe or blocked list.
MAX_SENDER_ENTRIES = 1024
MAX_IP_ENTRIES = 1273  # spec §10.2: each of the IP Allow and Block lists
MAX_FILE_TYPES = 1000
MAX_ARC_SEALERS = 100
MAX_SUBJECT_PREFIX = 255
MAX_X_HEADER = 76  # a header field name that still leaves room for its value on one line
RETENTION_DAYS = (1, 30)
BULK_THRESHOLDS = (1, 9)
JUNK_THRESHOLDS = (1, 9)
FALLBACK_X_HEADER = "X-This-Is-Spam"
CONNECTION = "connection"  # the `kind` of the connection filter's row

_IPV4_RANGE_MAX = 256  # a range may cover what the widest network entry covers: a /24...
_IPV6_RANGE_MAX = 1 << 80  # ...or a /48
_PREFIX_MIN = {4: 24, 6: 48}
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FILE_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")


class PolicyKind(StrEnum):
    ANTISPAM = "antispam"
    ANTIMALWARE = "antimalware"

    @property
    def label(self) -> str:
        return "anti-spam" if self is PolicyKind.ANTISPAM else "anti-malware"


class SenderListName(StrEnum):
    """A mailbox's two junk lists."""

    SAFE = "safe"
    BLOCKED = "blocked"


_SPAM_ACTIONS = frozenset(
    {
        FilterAction.JUNK,
        FilterAction.QUARANTINE,
        FilterAction.X_HEADER,
        FilterAction.PREPEND_SUBJECT,
        FilterAction.REDIRECT,
        FilterAction.DELETE,
    }
)
# spec §10.4 actions table (per verdict), and the actions Exchange offers for spoof, DMARC and files.
ALLOWED_ACTIONS: dict[str, frozenset[FilterAction]] = {
    "spam_action": _SPAM_ACTIONS,
    "high_confidence_spam_action": _SPAM_ACTIONS,
    "phish_action": _SPAM_ACTIONS,
    "high_confidence_phish_action": frozenset({FilterAction.QUARANTINE}),  # forced
    "bulk_action": _SPAM_ACTIONS | {FilterAction.INBOX},  # inbox: no action
    "spoof_action": frozenset({FilterAction.JUNK, FilterAction.QUARANTINE}),
    "dmarc_reject_action": frozenset({FilterAction.REJECT, FilterAction.QUARANTINE}),
    "dmarc_quarantine_action": frozenset({FilterAction.QUARANTINE, FilterAction.JUNK}),
    "file_action": frozenset({FilterAction.QUARANTINE, FilterAction.REJECT}),
}
_ACTION_ORDER = list(FilterAction)


@dataclass(frozen=True, slots=True)
class AntiSpamChange:
    """Anti-spam settings to change; None leaves one as it is (a list replaces the whole list)."""

    spam_action: FilterAction | None = None
    high_confidence_spam_action: FilterAction | None = None
    phish_action: FilterAction | None = None
    high_confidence_phish_action: FilterAction | None = None
    bulk_action: FilterAction | None = None
    spoof_action: FilterAction | None = None
    bulk_threshold: int | None = None
    mark_bulk_as_spam: bool | None = None
    junk_threshold: int | None = None
    x_header: str | None = None
    subject_prefix: str | None = None
    redirect_to: str | None = None  # "": none
    quarantine_retention_days: int | None = None
    allowed_senders: Sequence[str] | None = None
    allowed_domains: Sequence[str] | None = None
    blocked_senders: Sequence[str] | None = None
    blocked_domains: Sequence[str] | None = None
    honor_dmarc: bool | None = None
    dmarc_reject_action: FilterAction | None = None
    dmarc_quarantine_action: FilterAction | None = None
    trusted_arc_sealers: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class AntiMalwareChange:
    """Anti-malware settings to change; None leaves one as it is."""

    file_filter: bool | None = None
    file_types: Sequence[str] | None = None  # replaces the list
    file_action: FilterAction | None = None
    quarantine_retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What to change in a policy; None leaves a value as it is. A filter list replaces the filter
    (empty: no such filter). Name, priority and filters are for custom policies only."""

    name: str | None = None  # a new name
    priority: int | None = None
    users: Sequence[str] | None = None  # addresses of mailboxes or contacts of the tenant
    groups: Sequence[str] | None = None  # group addresses of the tenant
    domains: Sequence[str] | None = None  # accepted domains of the tenant
    settings: AntiSpamChange | AntiMalwareChange | None = None


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    """Changes to a tenant's IP Allow and Block lists: a list given replaces it, then entries are
    added and removed."""

    ip_allow: Sequence[str] | None = None
    ip_block: Sequence[str] | None = None
    add_ip_allow: Sequence[str] = ()
    remove_ip_allow: Sequence[str] = ()
    add_ip_block: Sequence[str] = ()
    remove_ip_block: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ProtectionPolicy:
    """A tenant's policy as an admin sees it: its filters name each recipient by its primary address."""

    tenant_id: int
    tenant: str
    kind: PolicyKind
    enabled: bool
    policy: AntiSpamPolicy | AntiMalwarePolicy

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def is_default(self) -> bool:
        return self.policy.priority is None


@dataclass(frozen=True, slots=True)
class ConnectionFilter:
    tenant_id: int
    tenant: str
    policy: ConnectionPolicy


@dataclass(frozen=True, slots=True)
class MailboxJunkLists:
    """A mailbox's safe and blocked senders, as an admin sees them."""

    mailbox: str  # its primary address
    lists: MailboxSenderLists


# --- values: checks and the stored form ---------------------------------------------------------
def normalize_ip_entry(entry: str) -> str:
    """The stored form of an IP Allow/Block entry (an address, `a-b` range or CIDR network);
    InvalidInputError saying what to write when it is none of them or is too wide."""
    text = entry.strip()
    hint = (
        "write an address (192.0.2.7), a range (192.0.2.10-192.0.2.20) or a network /24 to /32 "
        "(IPv6 /48 to /128)"
    )
    if not text or "%" in text:
        raise InvalidInputError(f"{entry!r} is not an IP entry: {hint}")
    try:
        if "-" in text:
            first, _, last = text.partition("-")
            low, high = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
            if low.version != high.version:
                raise InvalidInputError(f"the range {entry!r} mixes IPv4 and IPv6; {hint}")
            if int(high) < int(low):
                raise InvalidInputError(
                    f"the range {entry!r} ends before it starts; write the lower address first"
                )
            widest = _IPV4_RANGE_MAX if low.version == 4 else _IPV6_RANGE_MAX
            if int(high) - int(low) + 1 > widest:
                raise InvalidInputError(
                    f"the range {entry!r} is wider than a /{_PREFIX_MIN[low.version]}; list several "
                    "entries, or use a mail flow rule for wider ranges"
                )
            return str(low) if low == high else f"{low}-{high}"
        if "/" in text:
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError as error:
                if "host bits set" in str(error):
                    wide = ipaddress.ip_network(text, strict=False)
                    raise InvalidInputError(f"{entry!r} has host bits set: write {wide}") from None
                raise
            if network.prefixlen < _PREFIX_MIN[network.version]:
                raise InvalidInputError(
                    f"{entry!r} is wider than a /{_PREFIX_MIN[network.version]}; list several "
                    "networks, or use a mail flow rule for wider ones"
                )
            if network.num_addresses == 1:
                return str(network.network_address)
            return str(network)
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInputError(f"{entry!r} is not an IP entry: {hint}") from None


def _ip_list(entries: Iterable[str], which: str) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(normalize_ip_entry(e) for e in entries))
    if len(found) > MAX_IP_ENTRIES:
        raise InvalidInputError(
            f"the {which} list would hold {len(found)} entries; at most {MAX_IP_ENTRIES} are allowed "
            "(use ranges or networks, or a mail flow rule)"
        )
    return found


def sender_entry(entry: str) -> str:
    """An address (lower case, A-label domain) or a domain (A-label; `@example.com` is the domain);
    InvalidInputError when it is neither."""
    text = entry.strip()
    if text.startswith("@"):
        text = text[1:]
    if "@" in text:
        address = parse_address(text)
        return f"{address.local.lower()}@{address.domain}"
    return _domain_name(text, "a sender domain")


def _domain_name(text: str, what: str) -> str:
    try:
        name = normalize_domain(text)
    except AddressError as error:
        raise InvalidInputError(
            f"{text!r} is not {what} ({error}); write a name such as example.com"
        ) from None
    if name.startswith("["):
        raise InvalidInputError(f"{text!r} is not {what}; write a domain name such as example.com")
    return name


def _address_list(entries: Iterable[str], what: str) -> frozenset[str]:
    found = set()
    for entry in entries:
        if "@" not in entry.strip().lstrip("@"):
            raise InvalidInputError(f"{entry!r} is not an address; give {what} as local@domain")
        found.add(sender_entry(entry))
    return _bounded(found, what)


def _domain_list(entries: Iterable[str], what: str) -> frozenset[str]:
    return _bounded({_domain_name(e.strip().lstrip("@"), what) for e in entries}, what)


def _bounded(found: set[str], what: str) -> frozenset[str]:
    if len(found) > MAX_SENDER_ENTRIES:
        raise InvalidInputError(f"at most {MAX_SENDER_ENTRIES} {what} are allowed; {len(found)} were given")
    return frozenset(found)


def _in_range(value: int, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidInputError(f"{what} {value} is out of range: give {low} to {high}")
    return value


def _action(name: str, value: FilterAction | str) -> FilterAction:
    """`value` as the action of the setting `name`, if the spec allows it there."""
    allowed = ALLOWED_ACTIONS[name]
    choices = ", ".join(a.value for a in _ACTION_ORDER if a in allowed)
    what = name.replace("_", " ")
    try:
        action = FilterAction(value)
    except ValueError:
        raise InvalidInputError(f"{value!r} is not an action; the {what} is one of: {choices}") from None
    if action not in allowed:
        if len(allowed) == 1:
            raise InvalidInputError(f"the {what} can only be {choices}, not {action.value}")
        raise InvalidInputError(f"the {what} cannot be {action.value}; choose one of: {choices}")
    return action


def x_header_name(name: str) -> str:
    """The X-header action's field name: `name`, or `X-This-Is-Spam` when it is not a field name."""
    text = name.strip()
    if not _FIELD_NAME.fullmatch(text) or len(text) > MAX_X_HEADER:
        return FALLBACK_X_HEADER
    return text


def _antispam(policy: AntiSpamPolicy, change: AntiSpamChange) -> AntiSpamPolicy:
    values: dict[str, Any] = {}
    for item in fields(change):
        value = getattr(change, item.name)
        if value is None:
            continue
        if item.name in ALLOWED_ACTIONS:
            values[item.name] = _action(item.name, value)
        elif item.name == "bulk_threshold":
            values[item.name] = _in_range(value, BULK_THRESHOLDS, "bulk threshold")
        elif item.name == "junk_threshold":
            values[item.name] = _in_range(value, JUNK_THRESHOLDS, "junk threshold")
        elif item.name == "quarantine_retention_days":
            values[item.name] = _in_range(value, RETENTION_DAYS, "quarantine retention (days)")
        elif item.name == "x_header":
            values[item.name] = x_header_name(value)
        elif item.name == "subject_prefix":
            if not value.strip() or len(value) > MAX_SUBJECT_PREFIX or _CONTROL.search(value):
                raise InvalidInputError(
                    f"a subject prefix is 1 to {MAX_SUBJECT_PREFIX} printable characters, such as '[SPAM] '"
                )
            values[item.name] = value
        elif item.name == "redirect_to":
            values[item.name] = str(parse_address(value)) if value.strip() else ""
        elif item.name == "trusted_arc_sealers":
            sealers = {_domain_name(v, "an ARC sealer domain") for v in value}
            if len(sealers) > MAX_ARC_SEALERS:
                raise InvalidInputError(f"at most {MAX_ARC_SEALERS} trusted ARC sealers are allowed")
            values[item.name] = frozenset(sealers)
        elif item.name in ("allowed_senders", "blocked_senders"):
            which = item.name.partition("_")[0]
            current: SenderList = values.get(which, getattr(policy, which))
            values[which] = replace(current, addresses=_address_list(value, f"{which} senders"))
        elif item.name in ("allowed_domains", "blocked_domains"):
            which = item.name.partition("_")[0]
            current = values.get(which, getattr(policy, which))
            values[which] = replace(current, domains=_domain_list(value, f"{which} sender domains"))
        elif item.name in ("mark_bulk_as_spam", "honor_dmarc"):
            values[item.name] = bool(value)
        else:  # a field added to AntiSpamChange without its check here
            raise AssertionError(f"unchecked anti-spam setting {item.name}")
    changed = replace(policy, **values)
    redirecting = [f.name for f in fields(changed) if getattr(changed, f.name) is FilterAction.REDIRECT]
    if redirecting and not changed.redirect_to:
        what = redirecting[0].replace("_", " ")
        raise InvalidInputError(f"the {what} is redirect: give the address to redirect to (--redirect-to)")
    return changed


def _antimalware(policy: AntiMalwarePolicy, change: AntiMalwareChange) -> AntiMalwarePolicy:
    values: dict[str, Any] = {}
    if change.file_filter is not None:
        values["file_filter"] = bool(change.file_filter)
    if change.file_action is not None:
        values["file_action"] = _action("file_action", change.file_action)
    if change.quarantine_retention_days is not None:
        values["quarantine_retention_days"] = _in_range(
            change.quarantine_retention_days, RETENTION_DAYS, "quarantine retention (days)"
        )
    if change.file_types is not None:
        types = set()
        for entry in change.file_types:
            name = entry.strip().lower().lstrip(".")
            if not _FILE_TYPE.fullmatch(name):
                raise InvalidInputError(
                    f"{entry!r} is not a file type; give an extension such as exe or docm "
                    "(letters and digits)"
                )
            types.add(name)
        if len(types) > MAX_FILE_TYPES:
            raise InvalidInputError(f"at most {MAX_FILE_TYPES} file types are allowed")
        values["file_types"] = tuple(sorted(types))
    return replace(policy, **values)


_COLUMNS = ("name", "priority", "recipients")  # kept in their own columns, not in `settings`


def _to_json(value: object) -> object:
    if isinstance(value, SenderList):
        return {"addresses": sorted(value.addresses), "domains": sorted(value.domains)}
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _from_json(example: object, raw: Any) -> object:
    """`raw` (from JSON) as a value of the type of `example`; ValueError/TypeError when it is not one."""
    if isinstance(example, SenderList):
        return SenderList(frozenset(map(str, raw["addresses"])), frozenset(map(str, raw["domains"])))
    if isinstance(example, FilterAction):
        return FilterAction(raw)
    if isinstance(example, frozenset):
        return frozenset(map(str, raw))
    if isinstance(example, tuple):
        return tuple(map(str, raw))
    if isinstance(example, bool):
        if not isinstance(raw, bool):
            raise TypeError(raw)
        return raw
    if isinstance(example, int):
        if not isinstance(raw, int):
            raise TypeError(raw)
        return raw
    if not isinstance(raw, str):
        raise TypeError(raw)
    return raw


def settings_json(policy: AntiSpamPolicy | AntiMalwarePolicy | ConnectionPolicy) -> str:
    """The stored `settings`: the values that differ from the defaults."""
    default = type(policy)()
    differ = {
        f.name: _to_json(getattr(policy, f.name))
        for f in fields(policy)
        if f.name not in _COLUMNS and getattr(policy, f.name) != getattr(default, f.name)
    }
    return json.dumps(differ, sort_keys=True, ensure_ascii=False)


def _settings_of(default: Any, text: str, where: str) -> dict[str, object]:
    if text == "{}":
        return {}
    try:
        stored = json.loads(text)
    except ValueError:
        log.error("protection policy %s: unreadable settings; using the defaults", where)
        return {}
    values: dict[str, object] = {}
    if not isinstance(stored, dict):
        return values
    for key, raw in stored.items():
        if key in _COLUMNS or not hasattr(default, key):
            continue  # a setting this version does not know
        try:
            values[key] = _from_json(getattr(default, key), raw)
        except (KeyError, TypeError, ValueError):
            log.error("protection policy %s: unreadable %s=%r; using its default", where, key, raw)
    return values


# --- the mail-flow loaders --------------------------------------------------------------------------
_REMOVED = "<removed recipient {}>"  # what a filter holds for a recipient since removed: no address


def _ids(text: str) -> list[int]:
    if text == "[]":
        return []
    try:
        return [int(i) for i in json.loads(text)]
    except (ValueError, TypeError):
        return []


def _names(text: str) -> list[str]:
    if text == "[]":
        return []
    try:
        return [str(n) for n in json.loads(text)]
    except (ValueError, TypeError):
        return []


def _addresses_of(conn: Connection, ids: set[int], *, every: bool) -> dict[int, list[str]]:
    """Each recipient's addresses, lower case: every one (mail flow), or only its primary (display)."""
    found: dict[int, list[str]] = {}
    for recipient_id in sorted(ids):
        for address, key, primary in _RECIPIENT_ADDRESSES.fetch(conn, {"recipient_id": recipient_id}):
            if every or primary:
                names = found.setdefault(recipient_id, [])
                names.append(address.lower())
                if every and key != names[-1]:
                    names.append(key)
    return found


def _filter(
    row: _PolicyRow, named: dict[int, list[str]], reach: dict[int, list[str]] | None = None
) -> RecipientFilter:
    """The row's recipient filters as addresses; with `reach` (mail flow), a group filter holds
    every address of the group's members too, nested groups followed (`_group_reach`)."""

    def resolve(ids: list[int], table: dict[int, list[str]]) -> frozenset[str]:
        return frozenset(a for i in ids for a in table.get(i, [_REMOVED.format(i)]))

    groups = resolve(row.groups, named)
    if reach is not None:
        groups |= resolve(row.groups, reach)
    return RecipientFilter(users=resolve(row.users, named), groups=groups, domains=frozenset(row.domains))


MAX_GROUP_REACH = 10_000  # member addresses one policy's group filter holds at most (then cut, logged)


def _group_reach(conn: Connection, group_ids: set[int]) -> dict[int, list[str]]:
    """For each group, every address of every recipient it reaches (members, members of nested
    groups; each group once), at most `MAX_GROUP_REACH`: a policy scoped to a group applies to the
    mail of its members, whichever of their addresses the message named."""
    reach: dict[int, list[str]] = {}
    for group_id in sorted(group_ids):
        seen_groups, members, queue = {group_id}, set[int](), [group_id]
        while queue and len(members) < MAX_GROUP_REACH:
            for address in group_member_addresses(conn, queue.pop()):
                owner = find_address(conn, parse_address(address).key)
                if owner is None or owner.recipient_id in members:
                    continue
                if owner.kind is RecipientKind.GROUP:
                    if owner.recipient_id not in seen_groups:
                        seen_groups.add(owner.recipient_id)
                        queue.append(owner.recipient_id)
                else:
                    members.add(owner.recipient_id)
        if len(members) >= MAX_GROUP_REACH:
            log.warning(
                "group %d reaches over %d recipients: its policy filter is cut", group_id, MAX_GROUP_REACH
            )
        reach[group_id] = [
            a for addresses in _addresses_of(conn, members, every=True).values() for a in addresses
        ]
    return reach


class _PolicyRow(NamedTuple):
    id: int
    tenant_id: int
    kind: str
    name: str
    priority: int | None
    enabled: bool
    settings: str
    users: list[int]  # recipient ids
    groups: list[int]
    domains: list[str]


# The loaders run on every cache miss: their queries go straight to the driver (`storage.prepared`).
_TENANT_POLICIES = PreparedStatement(
    select(*(protection_policies.c[name] for name in _PolicyRow._fields))
    .where(protection_policies.c.tenant_id == bindparam("tenant_id"))
    .order_by(protection_policies.c.priority, protection_policies.c.id)
)
_RECIPIENT_ADDRESSES = PreparedStatement(
    select(addresses.c.address, addresses.c.key, addresses.c.is_primary).where(
        addresses.c.recipient_id == bindparam("recipient_id")
    )
)
_MAILBOX_SENDERS = PreparedStatement(
    select(mailbox_sender_lists.c.list, mailbox_sender_lists.c.entry).where(
        mailbox_sender_lists.c.mailbox_id == bindparam("mailbox_id")
    )
)


def _policy_rows(conn: Connection, tenant_id: int) -> list[_PolicyRow]:
    return [
        _PolicyRow._make((*row[:7], _ids(row[7]), _ids(row[8]), _names(row[9])))
        for row in _TENANT_POLICIES.fetch(conn, {"tenant_id": tenant_id})
    ]


def _build(
    row: _PolicyRow, named: dict[int, list[str]], reach: dict[int, list[str]] | None = None
) -> AntiSpamPolicy | AntiMalwarePolicy:
    cls = AntiSpamPolicy if row.kind == PolicyKind.ANTISPAM else AntiMalwarePolicy
    values = _settings_of(cls(), row.settings, f"{row.tenant_id}/{row.kind}/{row.name}")
    if row.priority is None:
        return cls(**values)  # type: ignore[arg-type]
    recipients = _filter(row, named, reach)
    return cls(name=row.name, priority=row.priority, recipients=recipients, **values)  # type: ignore[arg-type]


def _connection(settings: str | None, tenant_id: int) -> ConnectionPolicy:
    if settings is None:
        return ConnectionPolicy()
    values = _settings_of(ConnectionPolicy(), settings, f"{tenant_id}/connection")
    return ConnectionPolicy(**values)  # type: ignore[arg-type]


def load_tenant_protection(conn: Connection, tenant_id: int) -> TenantProtection:
    """The tenant's protection policies: its enabled custom policies by priority, its Defaults, its
    connection filter (mail flow, unscoped: the caller knows whose mail it is)."""
    rows = _policy_rows(conn, tenant_id)
    live = [r for r in rows if r.kind != CONNECTION and (r.priority is None or r.enabled)]
    ids = {i for r in live if r.priority is not None for i in (*r.users, *r.groups)}
    named = _addresses_of(conn, ids, every=True)
    reach = _group_reach(conn, {i for r in live if r.priority is not None for i in r.groups})
    antispam: list[AntiSpamPolicy] = []
    antimalware: list[AntiMalwarePolicy] = []
    spam_default, malware_default = AntiSpamPolicy(), AntiMalwarePolicy()
    for row in live:
        policy = _build(row, named, reach)
        if isinstance(policy, AntiSpamPolicy):
            if row.priority is None:
                spam_default = policy
            else:
                antispam.append(policy)
        elif row.priority is None:
            malware_default = policy
        else:
            antimalware.append(policy)
    connection = next((r.settings for r in rows if r.kind == CONNECTION), None)
    return TenantProtection(
        tenant_id,
        antispam=tuple(antispam),
        antispam_default=spam_default,
        antimalware=tuple(antimalware),
        antimalware_default=malware_default,
        connection=_connection(connection, tenant_id),
    )


def load_sender_lists(conn: Connection, mailbox_id: int) -> MailboxSenderLists:
    """The mailbox's own safe and blocked senders (entries with an `@` are addresses, others domains)."""
    entries: dict[str, tuple[set[str], set[str]]] = {"safe": (set(), set()), "blocked": (set(), set())}
    for which, entry in _MAILBOX_SENDERS.fetch(conn, {"mailbox_id": mailbox_id}):
        held = entries.get(which)
        if held is not None:
            held[0 if "@" in entry else 1].add(entry)
    safe, blocked = entries["safe"], entries["blocked"]
    return MailboxSenderLists(
        safe=SenderList(frozenset(safe[0]), frozenset(safe[1])),
        blocked=SenderList(frozenset(blocked[0]), frozenset(blocked[1])),
    )


# --- the service part ---------------------------------------------------------------------------------
class ProtectionPolicies(DirectoryBase):
    """The part of `Directory` that reads and changes protection policies and mailboxes' junk lists."""

    def protection_policies(self, scope: Scope, tenant: str, kind: PolicyKind) -> list[ProtectionPolicy]:
        """The tenant's policies of `kind` in the order they apply: custom by priority, the Default last."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return self._tenant_policies(conn, found, kind)

    def get_protection_policy(
        self, scope: Scope, tenant: str, kind: PolicyKind, name: str
    ) -> ProtectionPolicy:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return self._find_policy(conn, found, kind, name)

    def add_protection_policy(
        self, scope: Scope, tenant: str, kind: PolicyKind, name: str, change: PolicyChange
    ) -> ProtectionPolicy:
        """Add a custom policy with the defaults changed by `change`; at `change.priority` (pushing the
        policies there down), else below every other custom policy."""
        clean = self._policy_name(name, kind)
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            rows = self._custom_policy_rows(conn, found.id, kind)
            for row in rows:
                if row.name.lower() == clean.lower():
                    raise ConflictError(
                        f"tenant {found.name} already has an {kind.label} policy named {row.name}"
                    )
            if len(rows) >= MAX_POLICIES:
                raise InvalidInputError(
                    f"tenant {found.name} has {MAX_POLICIES} custom {kind.label} policies, the most allowed; "
                    "remove one first"
                )
            priority = len(rows) if change.priority is None else change.priority
            if not 0 <= priority <= len(rows):
                raise InvalidInputError(
                    f"priority {priority} is out of range: give 0 (highest) to {len(rows)}"
                )
            base: AntiSpamPolicy | AntiMalwarePolicy = (
                AntiSpamPolicy(name=clean, priority=priority)
                if kind is PolicyKind.ANTISPAM
                else AntiMalwarePolicy(name=clean, priority=priority)
            )
            policy = self._policy_settings(base, kind, change.settings)
            users, groups, domains = self._policy_filters(
                conn, found, change, {"users": [], "groups": [], "domains": []}
            )
            conn.execute(
                update(protection_policies)
                .where(
                    (protection_policies.c.tenant_id == found.id)
                    & (protection_policies.c.kind == kind.value)
                    & (protection_policies.c.priority >= priority)
                )
                .values(priority=protection_policies.c.priority + 1)
            )
            conn.execute(
                insert(protection_policies).values(
                    tenant_id=found.id,
                    kind=kind.value,
                    name=clean,
                    priority=priority,
                    enabled=True,
                    settings=settings_json(policy),
                    users=json.dumps(users),
                    groups=json.dumps(groups),
                    domains=json.dumps(domains),
                    created_at=self._clock(),
                )
            )
            changes.tenants.add(found.id)
            return self._find_policy(conn, found, kind, clean)

    def set_protection_policy(
        self, scope: Scope, tenant: str, kind: PolicyKind, name: str, change: PolicyChange
    ) -> ProtectionPolicy:
        """Change a policy: the Default's settings (the tenant's defaults), or a custom one's settings,
        name, priority (the others renumbered) and filters."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = self._find_policy(conn, found, kind, name)
            policy = self._policy_settings(current.policy, kind, change.settings)
            if current.is_default:
                if change.name is not None or change.priority is not None:
                    raise InvalidInputError(
                        f"{DEFAULT_POLICY} is built in: it keeps its name and runs last (no priority); "
                        "add a custom policy to treat some recipients differently"
                    )
                if any(f is not None for f in (change.users, change.groups, change.domains)):
                    raise InvalidInputError(
                        f"{DEFAULT_POLICY} applies to every recipient no custom policy takes: it has no "
                        "recipient filters; add a custom policy for some recipients"
                    )
                self._save_default_policy(conn, found.id, kind, policy)
                changes.tenants.add(found.id)
                return self._find_policy(conn, found, kind, DEFAULT_POLICY)
            row = self._policy_row(conn, found.id, kind, current.name)
            values: dict[str, object] = {"settings": settings_json(policy)}
            new_name = current.name
            if change.name is not None and change.name.strip() != current.name:
                new_name = self._policy_name(change.name, kind)
                clash = [
                    r
                    for r in self._custom_policy_rows(conn, found.id, kind)
                    if r.name.lower() == new_name.lower()
                ]
                if clash and clash[0].id != row.id:
                    raise ConflictError(
                        f"tenant {found.name} already has an {kind.label} policy named {new_name}"
                    )
                values["name"] = new_name
            stored: dict[str, list[Any]] = {
                "users": _ids(row.users),
                "groups": _ids(row.groups),
                "domains": _names(row.domains),
            }
            users, groups, domains = self._policy_filters(conn, found, change, stored)
            values.update(users=json.dumps(users), groups=json.dumps(groups), domains=json.dumps(domains))
            conn.execute(
                update(protection_policies).where(protection_policies.c.id == row.id).values(**values)
            )
            if change.priority is not None:
                self._move_policy(conn, found.id, kind, row.id, change.priority)
            changes.tenants.add(found.id)
            return self._find_policy(conn, found, kind, new_name)

    def remove_protection_policy(self, scope: Scope, tenant: str, kind: PolicyKind, name: str) -> None:
        """Remove a custom policy (the ones below it move up)."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = self._find_policy(conn, found, kind, name)
            if current.is_default:
                raise RefusedError(
                    f"{DEFAULT_POLICY} is built in and cannot be removed; change its settings with "
                    f"`postroom protection policy set {DEFAULT_POLICY} --kind {kind.value}`"
                )
            row = self._policy_row(conn, found.id, kind, current.name)
            conn.execute(delete(protection_policies).where(protection_policies.c.id == row.id))
            conn.execute(
                update(protection_policies)
                .where(
                    (protection_policies.c.tenant_id == found.id)
                    & (protection_policies.c.kind == kind.value)
                    & (protection_policies.c.priority > row.priority)
                )
                .values(priority=protection_policies.c.priority - 1)
            )
            changes.tenants.add(found.id)

    def enable_protection_policy(
        self, scope: Scope, tenant: str, kind: PolicyKind, name: str, enabled: bool
    ) -> ProtectionPolicy:
        """Turn a custom policy on or off (off: it keeps its priority and applies to no one)."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = self._find_policy(conn, found, kind, name)
            if current.is_default:
                raise RefusedError(
                    f"{DEFAULT_POLICY} is built in and always on; change its settings, or add a custom "
                    "policy with other settings for some recipients"
                )
            row = self._policy_row(conn, found.id, kind, current.name)
            conn.execute(
                update(protection_policies).where(protection_policies.c.id == row.id).values(enabled=enabled)
            )
            changes.tenants.add(found.id)
            return replace(current, enabled=enabled)

    # --- the connection filter ----------------------------------------------------------------------
    def connection_filter(self, scope: Scope, tenant: str) -> ConnectionFilter:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            row = self._connection_row(conn, found.id)
            return ConnectionFilter(
                found.id, found.name, _connection(None if row is None else row.settings, found.id)
            )

    def set_connection_filter(self, scope: Scope, tenant: str, change: ConnectionChange) -> ConnectionFilter:
        """Change the tenant's IP Allow and Block lists (see `ConnectionChange`)."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            row = self._connection_row(conn, found.id)
            current = _connection(None if row is None else row.settings, found.id)
            allow = _changed_list(
                current.ip_allow,
                change.ip_allow,
                change.add_ip_allow,
                change.remove_ip_allow,
                "IP Allow",
                found,
            )
            block = _changed_list(
                current.ip_block,
                change.ip_block,
                change.add_ip_block,
                change.remove_ip_block,
                "IP Block",
                found,
            )
            policy = ConnectionPolicy(ip_allow=allow, ip_block=block)
            self._write_default(conn, found.id, CONNECTION, None if row is None else row.id, policy)
            changes.tenants.add(found.id)
            return ConnectionFilter(found.id, found.name, policy)

    # --- mailboxes' safe and blocked senders ----------------------------------------------------------
    def junk_senders(self, scope: Scope, address: str) -> MailboxJunkLists:
        with self._db.read() as conn:
            mailbox_id, primary = self._junk_mailbox(conn, scope, address)
            return MailboxJunkLists(primary, load_sender_lists(conn, mailbox_id))

    def change_junk_senders(
        self,
        scope: Scope,
        address: str,
        *,
        add: Sequence[tuple[SenderListName, str]] = (),
        remove: Sequence[tuple[SenderListName, str]] = (),
    ) -> MailboxJunkLists:
        """Add entries to and remove entries from a mailbox's safe and blocked senders (an address or a
        domain each). Adding an entry already there is no change; removing one that is not is an error."""
        additions = [(which, sender_entry(entry)) for which, entry in add]
        removals = [(which, sender_entry(entry)) for which, entry in remove]
        table = mailbox_sender_lists
        with self._write() as (conn, changes):
            mailbox_id, primary = self._junk_mailbox(conn, scope, address)
            held = {
                (SenderListName(r.list), r.entry)
                for r in conn.execute(
                    select(table.c.list, table.c.entry).where(table.c.mailbox_id == mailbox_id)
                )
            }
            for which, entry in removals:
                if (which, entry) not in held:
                    raise NotFoundError(f"{entry} is not on the {which.value} senders of {primary}")
                conn.execute(
                    delete(table).where(
                        (table.c.mailbox_id == mailbox_id)
                        & (table.c.list == which.value)
                        & (table.c.entry == entry)
                    )
                )
                held.discard((which, entry))
            for which, entry in additions:
                other = SenderListName.BLOCKED if which is SenderListName.SAFE else SenderListName.SAFE
                if (other, entry) in held:
                    raise ConflictError(
                        f"{entry} is on the {other.value} senders of {primary}; remove it there first"
                    )
                if (which, entry) in held:
                    continue
                if sum(1 for w, _ in held if w is which) >= MAX_SENDER_ENTRIES:
                    raise InvalidInputError(
                        f"the {which.value} senders of {primary} hold {MAX_SENDER_ENTRIES} entries, the most "
                        "allowed; remove some, or use a domain for many senders of one domain"
                    )
                conn.execute(insert(table).values(mailbox_id=mailbox_id, list=which.value, entry=entry))
                held.add((which, entry))
            changes.recipients.add(mailbox_id)
            return MailboxJunkLists(primary, load_sender_lists(conn, mailbox_id))

    # --- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _policy_name(name: str, kind: PolicyKind) -> str:
        clean = name.strip()
        if not clean or len(clean) > MAX_NAME_LENGTH or _CONTROL.search(clean):
            raise InvalidInputError(f"a policy's name must be 1 to {MAX_NAME_LENGTH} printable characters")
        if clean.lower() == DEFAULT_POLICY.lower():
            raise InvalidInputError(
                f"{DEFAULT_POLICY} is the built-in {kind.label} policy; choose another name (change the "
                f"Default's settings with `postroom protection policy set {DEFAULT_POLICY}`)"
            )
        return clean

    @staticmethod
    def _policy_settings(
        policy: AntiSpamPolicy | AntiMalwarePolicy,
        kind: PolicyKind,
        change: AntiSpamChange | AntiMalwareChange | None,
    ) -> AntiSpamPolicy | AntiMalwarePolicy:
        if change is None:
            return policy
        if isinstance(policy, AntiSpamPolicy) and isinstance(change, AntiSpamChange):
            return _antispam(policy, change)
        if isinstance(policy, AntiMalwarePolicy) and isinstance(change, AntiMalwareChange):
            return _antimalware(policy, change)
        raise InvalidInputError(f"those settings are not {kind.label} settings; give the policy's own kind")

    def _policy_filters(
        self, conn: Connection, tenant: Tenant, change: PolicyChange, stored: dict[str, list[Any]]
    ) -> tuple[list[int], list[int], list[str]]:
        """The filters after `change` (recipient ids, domain names), each checked to be the tenant's own."""
        users = (
            stored["users"]
            if change.users is None
            else self._filter_recipients(conn, tenant, change.users, group=False)
        )
        groups = (
            stored["groups"]
            if change.groups is None
            else self._filter_recipients(conn, tenant, change.groups, group=True)
        )
        domains = (
            stored["domains"]
            if change.domains is None
            else self._filter_domains(conn, tenant, change.domains)
        )
        if not (users or groups or domains):
            raise InvalidInputError(
                "a custom policy needs at least one recipient filter: give users, groups or domains "
                f"(the {DEFAULT_POLICY} policy applies to everyone else)"
            )
        return users, groups, domains

    @staticmethod
    def _filter_recipients(
        conn: Connection, tenant: Tenant, entries: Sequence[str], *, group: bool
    ) -> list[int]:
        ids: list[int] = []
        for entry in entries:
            owner = find_address(conn, parse_address(entry).key)
            if owner is None or owner.tenant_id != tenant.id:
                raise NotFoundError(f"no such recipient in this tenant: {entry.strip()}")
            if group and owner.kind is not RecipientKind.GROUP:
                raise InvalidInputError(
                    f"{entry.strip()} is a {owner.kind.value}, not a group: give it as a user"
                )
            if not group and owner.kind is RecipientKind.GROUP:
                raise InvalidInputError(f"{entry.strip()} is a group: give it as a group (its members)")
            if owner.recipient_id not in ids:
                ids.append(owner.recipient_id)
        if len(ids) > MAX_FILTER_ENTRIES:
            raise InvalidInputError(
                f"a recipient filter holds at most {MAX_FILTER_ENTRIES} entries; use a group"
            )
        return ids

    @staticmethod
    def _filter_domains(conn: Connection, tenant: Tenant, entries: Sequence[str]) -> list[str]:
        names: list[str] = []
        for entry in entries:
            name = _domain_name(entry.strip().lstrip("@"), "a domain")
            domain = find_domain(conn, name)
            if domain is None or domain.tenant_id != tenant.id:
                raise NotFoundError(
                    f"{entry.strip()} is not an accepted domain of this tenant; `postroom domain list` "
                    "shows them"
                )
            if name not in names:
                names.append(name)
        if len(names) > MAX_FILTER_ENTRIES:
            raise InvalidInputError(f"a domain filter holds at most {MAX_FILTER_ENTRIES} domains")
        return names

    def _tenant_policies(self, conn: Connection, tenant: Tenant, kind: PolicyKind) -> list[ProtectionPolicy]:
        rows = [r for r in _policy_rows(conn, tenant.id) if r.kind == kind.value]
        ids = {i for r in rows if r.priority is not None for i in (*r.users, *r.groups)}
        named = _addresses_of(conn, ids, every=False)
        custom = [
            ProtectionPolicy(tenant.id, tenant.name, kind, bool(r.enabled), _build(r, named))
            for r in rows
            if r.priority is not None
        ]
        default_row = next((r for r in rows if r.priority is None), None)
        default: AntiSpamPolicy | AntiMalwarePolicy
        if default_row is not None:
            default = _build(default_row, named)
        else:
            default = AntiSpamPolicy() if kind is PolicyKind.ANTISPAM else AntiMalwarePolicy()
        return [*custom, ProtectionPolicy(tenant.id, tenant.name, kind, True, default)]

    def _find_policy(self, conn: Connection, tenant: Tenant, kind: PolicyKind, name: str) -> ProtectionPolicy:
        key = name.strip().lower()
        for policy in self._tenant_policies(conn, tenant, kind):
            if policy.name.lower() == key:
                return policy
        raise NotFoundError(
            f"tenant {tenant.name} has no {kind.label} policy {name!r}; `postroom protection policy list "
            f"--kind {kind.value} --tenant {tenant.name}` shows them"
        )

    @staticmethod
    def _custom_policy_rows(conn: Connection, tenant_id: int, kind: PolicyKind) -> list[Row[Any]]:
        return list(
            conn.execute(
                select(protection_policies.c.id, protection_policies.c.name, protection_policies.c.priority)
                .where(
                    (protection_policies.c.tenant_id == tenant_id)
                    & (protection_policies.c.kind == kind.value)
                    & protection_policies.c.priority.is_not(None)
                )
                .order_by(protection_policies.c.priority, protection_policies.c.id)
            )
        )

    @staticmethod
    def _policy_row(conn: Connection, tenant_id: int, kind: PolicyKind, name: str) -> Row[Any]:
        return conn.execute(
            select(protection_policies).where(
                (protection_policies.c.tenant_id == tenant_id)
                & (protection_policies.c.kind == kind.value)
                & (protection_policies.c.name == name)
            )
        ).one()

    def _move_policy(
        self, conn: Connection, tenant_id: int, kind: PolicyKind, row_id: int, priority: int
    ) -> None:
        """Put the policy `row_id` at `priority`, the others keeping their order around it (0..n-1)."""
        rows = self._custom_policy_rows(conn, tenant_id, kind)
        if not 0 <= priority < len(rows):
            raise InvalidInputError(
                f"priority {priority} is out of range: give 0 (highest) to {len(rows) - 1}"
            )
        order = [r.id for r in rows if r.id != row_id]
        order.insert(priority, row_id)
        now = {r.id: r.priority for r in rows}
        for position, policy_id in enumerate(order):
            if now[policy_id] != position:
                conn.execute(
                    update(protection_policies)
                    .where(protection_policies.c.id == policy_id)
                    .values(priority=position)
                )

    def _save_default_policy(
        self, conn: Connection, tenant_id: int, kind: PolicyKind, policy: AntiSpamPolicy | AntiMalwarePolicy
    ) -> None:
        row = conn.execute(
            select(protection_policies.c.id).where(
                (protection_policies.c.tenant_id == tenant_id)
                & (protection_policies.c.kind == kind.value)
                & protection_policies.c.priority.is_(None)
            )
        ).scalar_one_or_none()
        self._write_default(conn, tenant_id, kind.value, row, policy)

    def _write_default(
        self,
        conn: Connection,
        tenant_id: int,
        kind: str,
        row_id: int | None,
        policy: AntiSpamPolicy | AntiMalwarePolicy | ConnectionPolicy,
    ) -> None:
        """Store a tenant's Default policy of `kind`: its row (`row_id`) updated, or made."""
        if row_id is not None:
            conn.execute(
                update(protection_policies)
                .where(protection_policies.c.id == row_id)
                .values(settings=settings_json(policy))
            )
            return
        conn.execute(
            insert(protection_policies).values(
                tenant_id=tenant_id,
                kind=kind,
                name=DEFAULT_POLICY,
                priority=None,
                enabled=True,
                settings=settings_json(policy),
                created_at=self._clock(),
            )
        )

    @staticmethod
    def _connection_row(conn: Connection, tenant_id: int) -> Row[Any] | None:
        return conn.execute(
            select(protection_policies).where(
                (protection_policies.c.tenant_id == tenant_id) & (protection_policies.c.kind == CONNECTION)
            )
        ).first()

    def _junk_mailbox(self, conn: Connection, scope: Scope, address: str) -> tuple[int, str]:
        owner = self._owner(conn, scope, address)
        if owner.kind is not RecipientKind.MAILBOX:
            raise InvalidInputError(
                f"{owner.primary_address} is a {owner.kind.value}; only a mailbox has safe and blocked "
                "senders"
            )
        return owner.recipient_id, owner.primary_address


def _changed_list(
    current: tuple[str, ...],
    replacement: Sequence[str] | None,
    added: Sequence[str],
    removed: Sequence[str],
    which: str,
    tenant: Tenant,
) -> tuple[str, ...]:
    entries = list(current if replacement is None else _ip_list(replacement, which))
    for entry in removed:
        normal = normalize_ip_entry(entry)
        if normal not in entries:
            raise NotFoundError(f"{normal} is not on the {which} list of tenant {tenant.name}")
        entries.remove(normal)
    return _ip_list([*entries, *added], which)
