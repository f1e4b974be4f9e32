"""A tenant's inbound and outbound connectors (spec §3): the `Connectors` part of the directory
service, the stored rows, and the loaders mail flow reads.

The value types and the matching rules are `model.connectors`; this module reads and writes the
`inbound_connectors`, `outbound_connectors`, `connector_validations` and `tenant_scenarios` tables
(`storage.schema`). The loaders here are what `view.DirectoryView` answers from: every enabled inbound
connector of the service as one `ConnectorTable` (a connection is attributed before its tenant is
known), and one tenant's outbound connectors. A stored list that no longer parses (written by another
version) loses only the entries that fail; everything is checked when written.

**Writes** (`Connectors`): `add_*_connector(scope, tenant, name, type, **settings)` and
`set_*_connector(scope, tenant, name, **settings)` take the settings by the field names of
`InboundConnector` / `OutboundConnector`; a list setting replaces the list. Every write checks the whole
connector as it would be stored, in one transaction, and raises an `InvalidInputError` (a rule broken)
or a `ConflictError` (a name in use, a recipient domain another connector already routes) whose
message names the setting and the fix; nothing is written then. The rules (spec §3.1, §3.2):

- a name of 1 to 64 printable characters, unique in the tenant and the direction, case-insensitively;
- inbound: sender domains `*`, `x.com` or `*.x.com`, at least one; sender IPs as `model.ipfilter` takes
  them (every bad entry named); a certificate name `x.com` or `*.x.com`. An OnPremises connector
  identifies its source by IP or certificate (a Partner connector may match by sender domain alone).
  An enabled OnPremises connector's certificate name must be, or be under, one of the tenant's
  **verified** accepted domains (spec §3.4): otherwise anyone holding a certificate for another
  organization's name could present it and be taken for this tenant's on-premises server. (A disabled
  one may wait for its domain's verification; turning it on checks the name. Turning one off is always
  allowed, also when its domain has gone since.) Restricting domains to IPs
  or to the certificate is for Partner connectors and needs the IPs or the certificate name; treating
  messages as internal is for OnPremises connectors; enhanced filtering skips the last IP or listed IPs,
  not both; its users are addresses; associated accepted domains are the tenant's accepted domains;
- outbound: recipient domains `x.com` or `*.x.com`; smart hosts a host name or IP address with an
  optional port (`[2001:db8::7]:25`), none meaning delivery by MX; TLS one of `OutboundTls`, with a
  TLS domain exactly for domain validation; all accepted domains, centralized mail transport and sender
  rewriting for OnPremises connectors only; a connector that is not rule-scoped routes some recipient
  domains or all accepted domains, and no two of a tenant's connectors route the same recipient domain
  (or both all accepted domains): the spec's "avoid duplicates", refused rather than resolved by order.

Scope: every method takes the caller's `Scope` first; another tenant's connectors, validations and
scenario are answered exactly as ones that do not exist. A connector write logs the tenant under
`ChangeKind.CONNECTORS`, so every node's `CachedDirectory` drops the inbound table and that tenant's
outbound list within a refresh. Validation history and the tenant's scenario are held by no cache, so
writing them logs nothing (which would make every node reload the service's inbound table for nothing).
A tenant's removal removes all of its rows (foreign-key cascade) and logs its connectors as changed;
tenant ids are never reused, so a new tenant with the removed one's name starts with none.

Service-wide: several tenants' OnPremises connectors may claim the same IP (shared hosting exists);
attribution then falls back on the sender's domain (`model.connectors.attribute`).
`inbound_connector_warnings` tells the operator so (a tenant is not told about another tenant's
connectors), and that an OnPremises certificate name is no longer under a verified domain.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, delete, insert, select, update

from postroom.directory.base import DirectoryBase, parse_address
from postroom.directory.errors import ConflictError, InvalidInputError, NotFoundError
from postroom.directory.records import Tenant
from postroom.model import AddressError, normalize_domain
from postroom.model.connectors import (
    ConnectorTable,
    ConnectorType,
    InboundConnector,
    OutboundConnector,
    OutboundTls,
    TenantScenario,
    ValidationResult,
    ValidationStep,
    parse_smart_host,
)
from postroom.model.ipfilter import IpList, IpListError, entry_range
from postroom.model.scope import OperatorScope, Scope
from postroom.storage.schema import (
    connector_validations,
    domains,
    inbound_connectors,
    outbound_connectors,
    tenant_scenarios,
    tenants,
)

MAX_NAME_LENGTH = 64
MAX_DOMAIN_ENTRIES = 1000  # sender or recipient domains of one connector
MAX_ADDRESS_ENTRIES = 1000  # enhanced filtering users, validation recipients
MAX_SMART_HOSTS = 20
MAX_COMMENT_LENGTH = 1024
MAX_VALIDATIONS = 200  # validation rows (one per recipient and run) kept per connector, newest
MAX_SCENARIO_NAME = 40
MAX_SCENARIO_PARAMETERS = 16_384  # octets of the parameters as JSON

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCENARIO_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_FIXED = frozenset({"id", "tenant_id", "name", "type", "created_at", "ips"})
INBOUND_SETTINGS = frozenset(f.name for f in fields(InboundConnector)) - _FIXED
OUTBOUND_SETTINGS = frozenset(f.name for f in fields(OutboundConnector)) - _FIXED


def _strings(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def inbound_from_row(row: Row[tuple[object, ...]]) -> InboundConnector:
    m = row._mapping
    sender_ips = _strings(str(m["sender_ips"]))
    return InboundConnector(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        name=str(m["name"]),
        type=ConnectorType(m["type"]),
        enabled=bool(m["enabled"]),
        sender_domains=_strings(str(m["sender_domains"])),
        sender_ips=sender_ips,
        tls_certificate_name=str(m["tls_certificate_name"]),
        require_tls=bool(m["require_tls"]),
        restrict_domains_to_ips=bool(m["restrict_domains_to_ips"]),
        restrict_domains_to_certificate=bool(m["restrict_domains_to_certificate"]),
        treat_messages_as_internal=bool(m["treat_messages_as_internal"]),
        associated_accepted_domains=_strings(str(m["associated_accepted_domains"])),
        ef_skip_last_ip=bool(m["ef_skip_last_ip"]),
        ef_skip_ips=_strings(str(m["ef_skip_ips"])),
        ef_users=_strings(str(m["ef_users"])),
        comment=str(m["comment"]),
        created_at=float(m["created_at"]),
        ips=IpList.parse(sender_ips, skip_invalid=True),
    )


def outbound_from_row(row: Row[tuple[object, ...]]) -> OutboundConnector:
    m = row._mapping
    return OutboundConnector(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        name=str(m["name"]),
        type=ConnectorType(m["type"]),
        enabled=bool(m["enabled"]),
        recipient_domains=_strings(str(m["recipient_domains"])),
        all_accepted_domains=bool(m["all_accepted_domains"]),
        smart_hosts=_strings(str(m["smart_hosts"])),
        tls=OutboundTls(m["tls"]),
        tls_domain=str(m["tls_domain"]),
        rule_scoped=bool(m["rule_scoped"]),
        route_all_via_on_premises=bool(m["route_all_via_on_premises"]),
        sender_rewriting=bool(m["sender_rewriting"]),
        validation_recipients=_strings(str(m["validation_recipients"])),
        comment=str(m["comment"]),
        created_at=float(m["created_at"]),
    )


def load_inbound_table(conn: Connection) -> ConnectorTable:
    """Every enabled inbound connector of every tenant, indexed (what attribution asks)."""
    rows = conn.execute(
        select(inbound_connectors).where(inbound_connectors.c.enabled).order_by(inbound_connectors.c.id)
    ).all()
    return ConnectorTable(inbound_from_row(row) for row in rows)


def load_outbound_connectors(conn: Connection, tenant_id: int) -> tuple[OutboundConnector, ...]:
    """A tenant's outbound connectors, enabled or not, oldest first."""
    rows = conn.execute(
        select(outbound_connectors)
        .where(outbound_connectors.c.tenant_id == tenant_id)
        .order_by(outbound_connectors.c.id)
    ).all()
    return tuple(outbound_from_row(row) for row in rows)


def find_outbound_connector(conn: Connection, connector_id: int) -> OutboundConnector | None:
    """One outbound connector by id (what delivery asks for a queued recipient), or None when removed."""
    row = conn.execute(select(outbound_connectors).where(outbound_connectors.c.id == connector_id)).first()
    return outbound_from_row(row) if row is not None else None


# --- checks: each returns the stored form or raises InvalidInputError saying what to write ----------
_PATTERN_HINT = "write contoso.com, or *.contoso.com for its subdomains"


def connector_name(name: str, direction: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME_LENGTH or _CONTROL.search(clean):
        raise InvalidInputError(
            f"an {direction} connector's name must be 1 to {MAX_NAME_LENGTH} printable characters"
        )
    return clean


def connector_type(value: object) -> ConnectorType:
    """`partner` or `on-premises` (also `OnPremises`, as Exchange writes it)."""
    text = str(value.value if isinstance(value, ConnectorType) else value).strip().lower()
    if text == "onpremises":
        text = ConnectorType.ON_PREMISES.value
    try:
        return ConnectorType(text)
    except ValueError:
        raise InvalidInputError(
            f"{value!r} is not a connector type: give partner (a partner organization or a third-party "
            "filtering service) or on-premises (your own servers)"
        ) from None


def domain_pattern(text: str, what: str, *, star: bool = False) -> str:
    """`x.com` or `*.x.com` (and `*` when `star`), lower case, A-labels."""
    value = text.strip().lower().rstrip(".")
    if value == "*":
        if star:
            return value
        raise InvalidInputError(f"`*` is not {what}; name the domains: {_PATTERN_HINT}")
    wildcard = value.startswith("*.")
    base = value[2:] if wildcard else value
    if "*" in base:
        raise InvalidInputError(
            f"{text!r} is not {what}: a wildcard stands only as the whole first label; {_PATTERN_HINT}"
        )
    try:
        name = normalize_domain(base)
    except AddressError as error:
        raise InvalidInputError(f"{text!r} is not {what} ({error}); {_PATTERN_HINT}") from None
    if name.startswith("[") or "." not in name or _is_ip(name):
        raise InvalidInputError(f"{text!r} is not {what}; {_PATTERN_HINT}")
    return f"*.{name}" if wildcard else name


def _domain_name(text: str, what: str) -> str:
    try:
        return normalize_domain(text)
    except AddressError as error:
        raise InvalidInputError(
            f"{text!r} is not {what} ({error}); write a name such as contoso.com"
        ) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _patterns(entries: Iterable[str], what: str, *, star: bool = False) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(domain_pattern(entry, what, star=star) for entry in entries))
    if len(found) > MAX_DOMAIN_ENTRIES:
        raise InvalidInputError(f"at most {MAX_DOMAIN_ENTRIES} {what}s are allowed; {len(found)} were given")
    return found


def _ip_entries(entries: Sequence[str], what: str) -> tuple[str, ...]:
    """The entries as `model.ipfilter` takes them (every bad one named), stripped, each once."""
    try:
        parsed = IpList.parse(entries)
    except IpListError as error:
        raise InvalidInputError(f"{what}: {error}") from None
    return tuple(dict.fromkeys(parsed.entries))


def _addresses(entries: Iterable[str], what: str) -> tuple[str, ...]:
    found = []
    for entry in entries:
        address = parse_address(entry)
        found.append(f"{address.local.lower()}@{address.domain}")
    unique = tuple(dict.fromkeys(found))
    if len(unique) > MAX_ADDRESS_ENTRIES:
        raise InvalidInputError(f"at most {MAX_ADDRESS_ENTRIES} {what} are allowed; {len(unique)} were given")
    return unique


def smart_host(entry: str) -> str:
    """A smart host's stored form: `mail.x.com[:port]`, `192.0.2.7[:port]`, `[2001:db8::7][:port]`."""
    hint = "write a host name (mail.contoso.com) or an IP address, with :port if not 25 ([2001:db8::7]:25)"
    try:
        host, port = parse_smart_host(entry)
    except ValueError as error:
        raise InvalidInputError(f"smart host {error}; {hint}") from None
    if "/" in host:
        raise InvalidInputError(
            f"smart host {entry!r} is a network; a smart host is one server: {hint} (list several servers "
            "as several smart hosts)"
        )
    if "%" in host:
        raise InvalidInputError(f"smart host {entry!r} has a zone index; {hint}")
    if _is_ip(host):
        address = ipaddress.ip_address(host)
        shown = f"[{address.compressed}]" if address.version == 6 else str(address)
    else:
        try:
            shown = normalize_domain(host)
        except AddressError as error:
            raise InvalidInputError(f"smart host {entry!r} is not a host name ({error}); {hint}") from None
        if shown.startswith("[") or "." not in shown:
            raise InvalidInputError(f"smart host {entry!r} is not a fully qualified host name; {hint}")
    return f"{shown}:{port}" if port is not None else shown


def _comment(text: str) -> str:
    clean = text.strip()
    if len(clean) > MAX_COMMENT_LENGTH or _CONTROL.search(clean):
        raise InvalidInputError(f"a comment is at most {MAX_COMMENT_LENGTH} printable characters on one line")
    return clean


C = TypeVar("C", InboundConnector, OutboundConnector)


def _with_settings(current: C, settings: Mapping[str, object], allowed: frozenset[str], direction: str) -> C:
    """`current` with `settings` applied, each of the field's kind (a list setting replaces the list)."""
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise InvalidInputError(
            f"{unknown[0]!r} is not a setting of an {direction} connector; the settings are: "
            + ", ".join(sorted(allowed))
        )
    values: dict[str, Any] = {}
    for key, value in settings.items():
        example = getattr(current, key)
        if key == "type":
            values[key] = connector_type(value)
        elif key == "tls":
            values[key] = _tls(value)
        elif isinstance(example, bool):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{key} is true or false, not {value!r}")
            values[key] = value
        elif isinstance(example, tuple):
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise InvalidInputError(f"{key} is a list; give a list of strings, not {value!r}")
            items = list(value)
            if not all(isinstance(item, str) for item in items):
                raise InvalidInputError(f"{key} is a list of strings")
            values[key] = tuple(item.strip() for item in items if item.strip())
        else:
            if not isinstance(value, str):
                raise InvalidInputError(f"{key} is a string, not {value!r}")
            values[key] = value.strip()
    return replace(current, **values)


def _tls(value: object) -> OutboundTls:
    text = str(value.value if isinstance(value, OutboundTls) else value).strip().lower()
    if text in ("", "none"):
        return OutboundTls.OPPORTUNISTIC
    try:
        return OutboundTls(text)
    except ValueError:
        known = ", ".join(t.value for t in OutboundTls)
        raise InvalidInputError(f"{value!r} is not a TLS setting: give one of {known}") from None


def checked_inbound(
    connector: InboundConnector, verified: Sequence[str], accepted: Sequence[str]
) -> InboundConnector:
    """The connector in its stored form, or InvalidInputError for the first rule it breaks (see the
    module docstring). `verified`: the tenant's verified accepted domains; `accepted`: all of them."""
    partner = connector.type is ConnectorType.PARTNER
    if not connector.sender_domains:
        raise InvalidInputError(
            "an inbound connector covers some sender domains: give * (every domain), contoso.com or "
            "*.contoso.com"
        )
    sender_domains = _patterns(connector.sender_domains, "a sender domain", star=True)
    sender_ips = _ip_entries(connector.sender_ips, "sender IPs")
    certificate = (
        domain_pattern(connector.tls_certificate_name, "a certificate name")
        if connector.tls_certificate_name
        else ""
    )
    ef_skip_ips = _ip_entries(connector.ef_skip_ips, "enhanced filtering IPs to skip")
    ef_users = _addresses(connector.ef_users, "enhanced filtering users")
    associated = tuple(
        dict.fromkeys(_domain_name(d, "an accepted domain") for d in connector.associated_accepted_domains)
    )
    for name in associated:
        if name not in accepted:
            raise InvalidInputError(
                f"{name} is not an accepted domain of the tenant; associated accepted domains are the "
                "tenant's own (`postroom domain list` shows them)"
            )
    if connector.restrict_domains_to_ips and not partner:
        raise InvalidInputError(
            "restricting domains to IP addresses is for Partner connectors; an on-premises connector "
            "already identifies its source by IP or certificate"
        )
    if connector.restrict_domains_to_certificate and not partner:
        raise InvalidInputError(
            "restricting domains to the certificate is for Partner connectors; an on-premises connector "
            "already identifies its source by IP or certificate"
        )
    if connector.restrict_domains_to_ips and not sender_ips:
        raise InvalidInputError(
            "restricting domains to IP addresses needs the sender IPs to restrict them to; give the "
            "partner's addresses or networks"
        )
    if connector.restrict_domains_to_certificate and not certificate:
        raise InvalidInputError(
            "restricting domains to the certificate needs the certificate name; give the name on the "
            "partner's TLS certificate (*.contoso.com)"
        )
    if connector.treat_messages_as_internal and partner:
        raise InvalidInputError(
            "treating messages as internal is for on-premises connectors: a partner's mail is never internal"
        )
    if connector.ef_skip_last_ip and ef_skip_ips:
        raise InvalidInputError(
            "enhanced filtering skips either the last IP or the listed IPs, not both; choose one"
        )
    if not partner and not sender_ips and not certificate:
        raise InvalidInputError(
            "an on-premises connector identifies your server by its IP addresses or by the name on its "
            "TLS certificate; give sender IPs or a certificate name"
        )
    if not partner and certificate and connector.enabled and not _under(certificate, verified):
        raise InvalidInputError(
            f"the certificate name {certificate} is not under a verified accepted domain of the tenant: "
            "an on-premises server's certificate must name one of your own domains (*.contoso.com); "
            "verify the domain first, or give your domain's name"
        )
    return replace(
        connector,
        name=connector_name(connector.name, "inbound"),
        sender_domains=sender_domains,
        sender_ips=sender_ips,
        tls_certificate_name=certificate,
        ef_skip_ips=ef_skip_ips,
        ef_users=ef_users,
        associated_accepted_domains=associated,
        comment=_comment(connector.comment),
        ips=IpList.parse(sender_ips),
    )


def checked_outbound(connector: OutboundConnector) -> OutboundConnector:
    """The connector in its stored form, or InvalidInputError for the first rule it breaks."""
    partner = connector.type is ConnectorType.PARTNER
    recipient_domains = _patterns(connector.recipient_domains, "a recipient domain")
    hosts = tuple(dict.fromkeys(smart_host(host) for host in connector.smart_hosts))
    if len(hosts) > MAX_SMART_HOSTS:
        raise InvalidInputError(f"at most {MAX_SMART_HOSTS} smart hosts are allowed; {len(hosts)} were given")
    if connector.tls is OutboundTls.DOMAIN_VALIDATION:
        if not connector.tls_domain:
            raise InvalidInputError(
                "domain validation checks the destination's certificate against a name; give the TLS "
                "domain (mail.contoso.com or *.contoso.com)"
            )
        tls_domain = domain_pattern(connector.tls_domain, "a TLS domain")
    elif connector.tls_domain:
        raise InvalidInputError(
            "a TLS domain is checked only with domain validation; set TLS to domain-validation, or leave "
            "the TLS domain out"
        )
    else:
        tls_domain = ""
    for flag, what in (
        (connector.all_accepted_domains, "routing all accepted domains"),
        (
            connector.route_all_via_on_premises,
            "routing all mail via on-premises (centralized mail transport)",
        ),
        (connector.sender_rewriting, "sender rewriting"),
    ):
        if flag and partner:
            raise InvalidInputError(f"{what} is for on-premises connectors; make the connector on-premises")
    if not connector.rule_scoped and not recipient_domains and not connector.all_accepted_domains:
        raise InvalidInputError(
            "an outbound connector routes some recipients: give recipient domains (contoso.com, "
            "*.contoso.com), all accepted domains (on-premises), or make it rule-scoped (used only by a "
            "mail flow rule)"
        )
    return replace(
        connector,
        name=connector_name(connector.name, "outbound"),
        recipient_domains=recipient_domains,
        smart_hosts=hosts,
        tls_domain=tls_domain,
        validation_recipients=_addresses(connector.validation_recipients, "validation recipients"),
        comment=_comment(connector.comment),
    )


def _under(pattern: str, domains: Iterable[str]) -> bool:
    """Whether `pattern` (`x.com` or `*.x.com`) names only names at or under one of `domains`."""
    base = pattern[2:] if pattern.startswith("*.") else pattern
    return any(base == domain or base.endswith("." + domain) for domain in domains)


def _inbound_values(connector: InboundConnector) -> dict[str, object]:
    return {
        "name": connector.name,
        "name_key": connector.name.lower(),
        "type": connector.type.value,
        "enabled": connector.enabled,
        "sender_domains": json.dumps(list(connector.sender_domains)),
        "sender_ips": json.dumps(list(connector.sender_ips)),
        "tls_certificate_name": connector.tls_certificate_name,
        "require_tls": connector.require_tls,
        "restrict_domains_to_ips": connector.restrict_domains_to_ips,
        "restrict_domains_to_certificate": connector.restrict_domains_to_certificate,
        "treat_messages_as_internal": connector.treat_messages_as_internal,
        "associated_accepted_domains": json.dumps(list(connector.associated_accepted_domains)),
        "ef_skip_last_ip": connector.ef_skip_last_ip,
        "ef_skip_ips": json.dumps(list(connector.ef_skip_ips)),
        "ef_users": json.dumps(list(connector.ef_users)),
        "comment": connector.comment,
    }


def _outbound_values(connector: OutboundConnector) -> dict[str, object]:
    return {
        "name": connector.name,
        "name_key": connector.name.lower(),
        "type": connector.type.value,
        "enabled": connector.enabled,
        "recipient_domains": json.dumps(list(connector.recipient_domains)),
        "all_accepted_domains": connector.all_accepted_domains,
        "smart_hosts": json.dumps(list(connector.smart_hosts)),
        "tls": connector.tls.value,
        "tls_domain": connector.tls_domain,
        "rule_scoped": connector.rule_scoped,
        "route_all_via_on_premises": connector.route_all_via_on_premises,
        "sender_rewriting": connector.sender_rewriting,
        "validation_recipients": json.dumps(list(connector.validation_recipients)),
        "comment": connector.comment,
    }


def _validation_from_row(row: Row[Any]) -> ValidationResult:
    try:
        raw = json.loads(row.steps or "[]")
    except ValueError:
        raw = []
    steps = tuple(
        ValidationStep(
            str(s.get("step", "")), bool(s.get("ok")), str(s.get("detail", "")), str(s.get("reply", ""))
        )
        for s in (raw if isinstance(raw, list) else [])
        if isinstance(s, dict)
    )
    return ValidationResult(
        connector_id=int(row.connector_id),
        run=str(row.run),
        recipient=str(row.recipient),
        ok=bool(row.ok),
        reply=str(row.reply),
        steps=steps,
        at=float(row.at),
    )


def _overlaps(mine: Sequence[str], theirs: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (my entry, their entry) of IP entries that share an address."""
    found = []
    for a in mine:
        version_a, first_a, last_a = entry_range(a)
        for b in theirs:
            try:
                version_b, first_b, last_b = entry_range(b)
            except IpListError:
                continue
            if version_a == version_b and first_a <= last_b and first_b <= last_a:
                found.append((a, b))
    return found


# --- the service part ---------------------------------------------------------------------------
class Connectors(DirectoryBase):
    """The part of `Directory` that reads and changes a tenant's connectors, their validation history
    and the tenant's scenario (see the module docstring)."""

    # --- inbound ------------------------------------------------------------------------------------
    def inbound_connectors(self, scope: Scope, tenant: str) -> list[InboundConnector]:
        """The tenant's inbound connectors, enabled or not, in the order they were added."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            rows = conn.execute(
                select(inbound_connectors)
                .where(inbound_connectors.c.tenant_id == found.id)
                .order_by(inbound_connectors.c.id)
            ).all()
            return [inbound_from_row(row) for row in rows]

    def inbound_connector(self, scope: Scope, tenant: str, name: str) -> InboundConnector:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return inbound_from_row(self._inbound_row(conn, found, name))

    def add_inbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType | str, **settings: object
    ) -> InboundConnector:
        """Add an inbound connector (enabled unless `enabled=False`); the settings not given keep the
        defaults of `InboundConnector` (sender domains `*`, TLS required)."""
        clean = connector_name(name, "inbound")
        draft = _with_settings(
            InboundConnector(id=0, tenant_id=0, name=clean, type=connector_type(type)),
            settings,
            INBOUND_SETTINGS,
            "inbound",
        )
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            connector = checked_inbound(draft, *self._domains_of(conn, found.id))
            self._name_free(conn, inbound_connectors, found, clean, "inbound")
            values = _inbound_values(connector)
            created = conn.execute(
                insert(inbound_connectors).values(tenant_id=found.id, created_at=self._clock(), **values)
            )
            changes.connectors.add(found.id)
            return self._inbound_by_id(conn, int(created.inserted_primary_key[0]))  # type: ignore[index]

    def set_inbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> InboundConnector:
        """Change an inbound connector's settings (also `type`); the whole connector is checked again."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = inbound_from_row(self._inbound_row(conn, found, name))
            draft = _with_settings(current, settings, INBOUND_SETTINGS | {"type"}, "inbound")
            connector = checked_inbound(draft, *self._domains_of(conn, found.id))
            conn.execute(
                update(inbound_connectors)
                .where(inbound_connectors.c.id == current.id)
                .values(**_inbound_values(connector))
            )
            changes.connectors.add(found.id)
            return self._inbound_by_id(conn, current.id)

    def remove_inbound_connector(self, scope: Scope, tenant: str, name: str) -> None:
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            row = self._inbound_row(conn, found, name)
            conn.execute(delete(inbound_connectors).where(inbound_connectors.c.id == row.id))
            changes.connectors.add(found.id)

    def inbound_connector_warnings(self, scope: Scope, tenant: str, name: str) -> list[str]:
        """What an administrator should know about an inbound connector that is not a mistake:
        an OnPremises certificate name no longer under a verified domain of the tenant (the domain was
        removed since); for the operator only, the other tenants' OnPremises connectors that claim
        the same IPs (attribution then falls back on the sender's domain)."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            connector = inbound_from_row(self._inbound_row(conn, found, name))
            warnings: list[str] = []
            if connector.type is not ConnectorType.ON_PREMISES:
                return warnings
            verified, _ = self._domains_of(conn, found.id)
            name_ = connector.tls_certificate_name
            if name_ and not _under(name_, verified):
                warnings.append(
                    f"the certificate name {name_} is no longer under a verified accepted domain of "
                    f"{found.name}: mail over this connector is not attributed by certificate to the tenant "
                    "until the domain is verified again or the name changed"
                )
            if not isinstance(scope, OperatorScope) or not connector.sender_ips:
                return warnings
            others = conn.execute(
                select(inbound_connectors, tenants.c.name.label("tenant_name"))
                .join(tenants, tenants.c.id == inbound_connectors.c.tenant_id)
                .where(
                    (inbound_connectors.c.tenant_id != found.id)
                    & (inbound_connectors.c.type == ConnectorType.ON_PREMISES.value)
                )
                .order_by(inbound_connectors.c.id)
            ).all()
            for row in others:
                other = inbound_from_row(row)
                for mine, theirs in _overlaps(connector.sender_ips, other.sender_ips):
                    warnings.append(
                        f"{mine} overlaps {theirs} of on-premises connector {other.name} of tenant "
                        f"{row.tenant_name}: a connection from there is attributed by its sender's domain "
                        "(whose tenant owns it), and mail from a domain neither tenant has is attributed to "
                        "neither; give each tenant's server its own address or a certificate"
                    )
            return warnings

    # --- outbound -----------------------------------------------------------------------------------
    def outbound_connectors(self, scope: Scope, tenant: str) -> list[OutboundConnector]:
        """The tenant's outbound connectors, enabled or not, in the order they were added."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return list(load_outbound_connectors(conn, found.id))

    def outbound_connector(self, scope: Scope, tenant: str, name: str) -> OutboundConnector:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            return outbound_from_row(self._outbound_row(conn, found, name))

    def add_outbound_connector(
        self, scope: Scope, tenant: str, name: str, type: ConnectorType | str, **settings: object
    ) -> OutboundConnector:
        """Add an outbound connector (enabled unless `enabled=False`; no smart hosts: delivery by MX)."""
        clean = connector_name(name, "outbound")
        draft = _with_settings(
            OutboundConnector(id=0, tenant_id=0, name=clean, type=connector_type(type)),
            settings,
            OUTBOUND_SETTINGS,
            "outbound",
        )
        connector = checked_outbound(draft)
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            self._name_free(conn, outbound_connectors, found, clean, "outbound")
            self._no_duplicate_route(conn, found, connector, None)
            created = conn.execute(
                insert(outbound_connectors).values(
                    tenant_id=found.id, created_at=self._clock(), **_outbound_values(connector)
                )
            )
            changes.connectors.add(found.id)
            new_id = int(created.inserted_primary_key[0])  # type: ignore[index]
            found_connector = find_outbound_connector(conn, new_id)
            assert found_connector is not None
            return found_connector

    def set_outbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> OutboundConnector:
        """Change an outbound connector's settings (also `type`); the whole connector is checked again."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            current = outbound_from_row(self._outbound_row(conn, found, name))
            connector = checked_outbound(
                _with_settings(current, settings, OUTBOUND_SETTINGS | {"type"}, "outbound")
            )
            self._no_duplicate_route(conn, found, connector, current.id)
            conn.execute(
                update(outbound_connectors)
                .where(outbound_connectors.c.id == current.id)
                .values(**_outbound_values(connector))
            )
            changes.connectors.add(found.id)
            changed = find_outbound_connector(conn, current.id)
            assert changed is not None
            return changed

    def remove_outbound_connector(self, scope: Scope, tenant: str, name: str) -> None:
        """Remove an outbound connector and its validation history; mail already queued for it is
        delivered by MX (see `storage.schema.queue_recipients.connector_id`)."""
        with self._write() as (conn, changes):
            found = self._tenant(conn, scope, tenant)
            row = self._outbound_row(conn, found, name)
            conn.execute(delete(outbound_connectors).where(outbound_connectors.c.id == row.id))
            changes.connectors.add(found.id)

    def outbound_connector_by_id(self, connector_id: int) -> OutboundConnector | None:
        """One outbound connector by id, or None when removed (operator-side: delivery and validation
        follow a queued recipient's connector whatever its tenant)."""
        with self._db.read() as conn:
            return find_outbound_connector(conn, connector_id)

    # --- validation history -------------------------------------------------------------------------
    def record_validation(
        self, scope: Scope, tenant: str, name: str, results: Sequence[ValidationResult]
    ) -> None:
        """Keep a validation run's results (one per recipient) in the outbound connector's history;
        the oldest rows past `MAX_VALIDATIONS` are dropped."""
        with self._db.write() as conn:
            found = self._tenant(conn, scope, tenant)
            row = self._outbound_row(conn, found, name)
            for result in results:
                if result.connector_id != row.id:
                    raise InvalidInputError(
                        f"a validation result of connector id {result.connector_id} is not one of "
                        f"outbound connector {row.name}; record each connector's results under its name"
                    )
            if not results:
                return
            conn.execute(
                insert(connector_validations),
                [
                    {
                        "connector_id": row.id,
                        "tenant_id": found.id,
                        "run": r.run[:40],
                        "recipient": r.recipient[:320],
                        "ok": r.ok,
                        "reply": r.reply[:512],
                        "steps": json.dumps(
                            [
                                {"step": s.step, "ok": s.ok, "detail": s.detail, "reply": s.reply}
                                for s in r.steps
                            ]
                        ),
                        "at": r.at,
                    }
                    for r in results
                ],
            )
            kept = (
                select(connector_validations.c.id)
                .where(connector_validations.c.connector_id == row.id)
                .order_by(connector_validations.c.at.desc(), connector_validations.c.id.desc())
                .limit(MAX_VALIDATIONS)
            )
            conn.execute(
                delete(connector_validations).where(
                    (connector_validations.c.connector_id == row.id) & connector_validations.c.id.not_in(kept)
                )
            )

    def connector_validations(
        self, scope: Scope, tenant: str, name: str, limit: int = 20
    ) -> list[ValidationResult]:
        """The outbound connector's validation results, newest first (at most `limit`); [] when it
        was never validated."""
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            row = self._outbound_row(conn, found, name)
            rows = conn.execute(
                select(connector_validations)
                .where(connector_validations.c.connector_id == row.id)
                .order_by(connector_validations.c.at.desc(), connector_validations.c.id.desc())
                .limit(max(0, limit))
            ).all()
            return [_validation_from_row(r) for r in rows]

    # --- the tenant's scenario ----------------------------------------------------------------------
    def set_scenario(
        self, scope: Scope, tenant: str, scenario: str, parameters: Mapping[str, object]
    ) -> None:
        """Record the scenario (spec §4) the tenant's mail flow follows, replacing any before."""
        name = scenario.strip().lower()
        if not _SCENARIO_NAME.fullmatch(name) or len(name) > MAX_SCENARIO_NAME:
            raise InvalidInputError(
                f"{scenario!r} is not a scenario name; `postroom scenario list` shows them"
            )
        try:
            text = json.dumps(dict(parameters), sort_keys=True)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"the scenario's parameters are not plain values ({error})") from None
        if len(text.encode()) > MAX_SCENARIO_PARAMETERS:
            raise InvalidInputError(
                f"the scenario's parameters take {len(text.encode())} octets; at most "
                f"{MAX_SCENARIO_PARAMETERS} are kept"
            )
        with self._db.write() as conn:
            found = self._tenant(conn, scope, tenant)
            conn.execute(delete(tenant_scenarios).where(tenant_scenarios.c.tenant_id == found.id))
            conn.execute(
                insert(tenant_scenarios).values(
                    tenant_id=found.id, scenario=name, parameters=text, applied_at=self._clock()
                )
            )

    def scenario(self, scope: Scope, tenant: str) -> TenantScenario | None:
        with self._db.read() as conn:
            found = self._tenant(conn, scope, tenant)
            row = conn.execute(
                select(tenant_scenarios).where(tenant_scenarios.c.tenant_id == found.id)
            ).first()
        if row is None:
            return None
        try:
            parameters = json.loads(row.parameters or "{}")
        except ValueError:
            parameters = {}
        return TenantScenario(
            tenant_id=found.id,
            scenario=str(row.scenario),
            parameters=parameters if isinstance(parameters, dict) else {},
            applied_at=float(row.applied_at),
        )

    def clear_scenario(self, scope: Scope, tenant: str) -> None:
        """Forget the tenant's scenario (nothing when it has none)."""
        with self._db.write() as conn:
            found = self._tenant(conn, scope, tenant)
            conn.execute(delete(tenant_scenarios).where(tenant_scenarios.c.tenant_id == found.id))

    # --- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _domains_of(conn: Connection, tenant_id: int) -> tuple[list[str], list[str]]:
        """(verified, all) accepted domain names of the tenant."""
        rows = conn.execute(
            select(domains.c.name, domains.c.status).where(domains.c.tenant_id == tenant_id)
        ).all()
        return [r.name for r in rows if r.status == "verified"], [r.name for r in rows]

    @staticmethod
    def _name_free(conn: Connection, table: Any, tenant: Tenant, name: str, direction: str) -> None:
        taken = conn.execute(
            select(table.c.name).where((table.c.tenant_id == tenant.id) & (table.c.name_key == name.lower()))
        ).first()
        if taken is not None:
            raise ConflictError(
                f"tenant {tenant.name} already has an {direction} connector named {taken.name}; choose "
                f"another name, or change it with `postroom connector {direction} set`"
            )

    @staticmethod
    def _no_duplicate_route(
        conn: Connection, tenant: Tenant, connector: OutboundConnector, own_id: int | None
    ) -> None:
        """Refuse a second connector for a recipient domain (or all accepted domains): spec §3.3."""
        if connector.rule_scoped:
            return  # chosen only by a mail flow rule that names it, never by the recipient's domain
        for other in load_outbound_connectors(conn, tenant.id):
            if other.id == own_id or other.rule_scoped:
                continue
            shared = sorted(set(connector.recipient_domains) & set(other.recipient_domains))
            if shared:
                raise ConflictError(
                    f"outbound connector {other.name} of tenant {tenant.name} already routes {shared[0]}; "
                    "a recipient domain is routed by one connector: change or remove that one first"
                )
            if connector.all_accepted_domains and other.all_accepted_domains:
                raise ConflictError(
                    f"outbound connector {other.name} of tenant {tenant.name} already routes all accepted "
                    "domains; change or remove that one first"
                )

    @staticmethod
    def _inbound_row(conn: Connection, tenant: Tenant, name: str) -> Row[Any]:
        row = conn.execute(
            select(inbound_connectors).where(
                (inbound_connectors.c.tenant_id == tenant.id)
                & (inbound_connectors.c.name_key == name.strip().lower())
            )
        ).first()
        if row is None:
            raise NotFoundError(
                f"tenant {tenant.name} has no inbound connector {name!r}; `postroom connector inbound list "
                f"--tenant {tenant.name}` shows them"
            )
        return row

    @staticmethod
    def _outbound_row(conn: Connection, tenant: Tenant, name: str) -> Row[Any]:
        row = conn.execute(
            select(outbound_connectors).where(
                (outbound_connectors.c.tenant_id == tenant.id)
                & (outbound_connectors.c.name_key == name.strip().lower())
            )
        ).first()
        if row is None:
            raise NotFoundError(
                f"tenant {tenant.name} has no outbound connector {name!r}; `postroom connector outbound "
                f"list --tenant {tenant.name}` shows them"
            )
        return row

    @staticmethod
    def _inbound_by_id(conn: Connection, connector_id: int) -> InboundConnector:
        return inbound_from_row(
            conn.execute(select(inbound_connectors).where(inbound_connectors.c.id == connector_id)).one()
        )
