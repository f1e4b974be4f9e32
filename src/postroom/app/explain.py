"""Explain: one message run through the receiving flow of the MX endpoint, decided but never sent or stored.

`explain(app, request)` asks the same code the MX session asks, in the same order, and keeps each
stage's answer for an administrator to read before changing DNS or a connector:

1. **attribution** (spec §3.4): `model.connectors.attribute` over every enabled inbound connector, with
   the client's IP, the names of the TLS client certificate it would present (taken as verified: the
   administrator says which certificate) and the sender's domain: the OnPremises connector and
   tenant the connection belongs to, and every connector (Partner ones too) whose IP or certificate
   matched. That is the transaction's `Source`.
2. **recipients** (RCPT): `routing.resolve_recipient` with that `Source`, per recipient: accepted (whose
   recipient), relayed (to where, as whose mail) or refused with its reply; then the connection filter
   (the service's and the recipient's tenant's IP lists, DNS blocklists) as the MX applies it at RCPT;
   then a mailbox's quota (full: `552 5.2.2`).
3. **protection** (end of DATA): the node's filtering stack (`app.filtering.build_protection`, the
   node's settings and resolver) inspects the message (`--message`, or a minimal one from the sender
   to the recipients): SPF, DKIM, DMARC, composite authentication, the malware and spam verdicts, and
   each recipient's action (Inbox, Junk, quarantine, reject, ...). Off when `[protection]` is off.
4. **routes**: `routing.categorize` with the `Source`: one route per final recipient (groups
   expanded, forwards followed), local into which mailbox and folder, or remote by the outbound
   connector it takes (its name and smart hosts) or by the destination's MX (the MX hosts from DNS,
   in the order delivery tries them).

Nothing is written: the directory is read through `ConnectionView` in read transactions, protection
inspects a copy in memory, the SRS key is used only when the node has one. The connection filter's
rate limits count in this process only. What the MX session does that explain does not: the SMTP
dialogue itself (limits, STARTTLS, SIZE), the durable commit, enhanced filtering's walk of the
Received headers (it judges the connecting client here), and mail flow rules beyond protection.

*Security:* the message file is read whole up to the MX listener's message size limit; its bytes
only ever go through the same parsers that judge a stranger's message.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from postroom.app.filtering import build_protection
from postroom.app.inbound import attribute_source, mx_elsewhere
from postroom.app.mx import mailbox_full
from postroom.app.node import App
from postroom.app.sending import local_endpoints
from postroom.directory import ConnectionView
from postroom.dns.mail_hosts import MailHostError, mail_hosts
from postroom.model import Address, AddressError, replies
from postroom.model.connectors import Attribution, InboundConnector, OutboundConnector
from postroom.model.flow import Route, RoutedRecipient
from postroom.model.policy import MailboxSenderLists, TenantProtection
from postroom.model.scope import OPERATOR
from postroom.model.verdicts import ConnectionVerdict, Direction, MessageFacts
from postroom.protection.pipeline import RecipientFacts
from postroom.queue import new_message_id
from postroom.routing import (
    Accepted,
    Categorized,
    Rejected,
    RejectReason,
    Relayed,
    Resolution,
    categorize,
    resolve_recipient,
)
from postroom.routing.srs import Srs

DEFAULT_CLIENT_IP = "192.0.2.1"  # TEST-NET-1 (RFC 5737): "some Internet server" when none is given


class ExplainError(ValueError):
    """The request cannot be explained as given; the message names the option to fix."""


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    sender: str  # "" for the null sender <>
    recipients: tuple[str, ...]
    client_ip: str = DEFAULT_CLIENT_IP
    helo: str = ""  # "": the client's address literal
    tls: bool = False
    certificate: tuple[str, ...] = ()  # names of the client certificate (implies TLS)
    message: bytes | None = None  # None: a minimal message from the sender to the recipients


@dataclass(frozen=True, slots=True)
class ConnectorRef:
    name: str
    type: str
    tenant: str


@dataclass(frozen=True, slots=True)
class AttributionStage:
    client_ip: str
    tls: bool
    certificate: tuple[str, ...]
    sender_domain: str
    sender_tenant: str  # the tenant whose verified domain the sender's is, "" for none
    connector: ConnectorRef | None  # the OnPremises connector the connection is attributed to
    by_certificate: bool
    matched: tuple[ConnectorRef, ...]  # every connector whose IP or certificate matched
    ambiguous: bool
    summary: str


@dataclass(frozen=True, slots=True)
class RecipientStage:
    recipient: str
    outcome: str  # accepted | relayed | rejected
    reply: str
    tenant: str  # whose mail it is ("" for none)
    detail: str


@dataclass(frozen=True, slots=True)
class RecipientVerdict:
    recipient: str
    action: str  # inbox, junk, quarantine, reject, delete, redirect, ...
    verdict: str
    sfv: str
    scl: int
    policy: str
    folder: str
    reply: str


@dataclass(frozen=True, slots=True)
class ProtectionStage:
    enabled: bool
    connection: str  # the connection filter's service-wide verdict
    spf: str = ""
    dkim: tuple[str, ...] = ()
    dmarc: str = ""
    compauth: str = ""
    malware: str = ""
    spam: str = ""  # SCL, BCL, category, engine
    authentication_results: str = ""
    recipients: tuple[RecipientVerdict, ...] = ()
    deferred: str = ""  # an engine was unavailable and the node defers: the reply
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteStage:
    recipient: str
    original_recipient: str
    tenant: str
    route: str  # local | remote
    destination: str  # "mailbox <address>, folder Inbox", "connector X: smart hosts ...", "MX of d"
    connector: str  # the outbound connector's name, "" for none
    hosts: tuple[str, ...]  # smart hosts, or the MX hosts in the order delivery tries them
    failure: str  # the reply it fails with ("" when it goes on)
    envelope_sender: str


@dataclass(frozen=True, slots=True)
class Explanation:
    sender: str
    attribution: AttributionStage
    recipients: tuple[RecipientStage, ...]
    protection: ProtectionStage
    routes: tuple[RouteStage, ...]
    events: tuple[str, ...]  # what categorizing did (expansions, forwards, redirects), in words
    outcome: str  # what the client would be told at the end of DATA


def read_message(path: Path, limit: int) -> bytes:
    """A message file, its line ends made CRLF (as SMTP carries it); `ExplainError` when unreadable or
    over `limit` octets."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise ExplainError(f"--message {path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise ExplainError(f"--message {path}: larger than the MX listener takes ({limit} octets)")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def minimal_message(sender: str, recipients: Sequence[str], now: float) -> bytes:
    """The message explained when none is given: headers naming the envelope, one line of text."""
    domain = sender.rpartition("@")[2] or "explain.invalid"
    lines = [
        f"From: <{sender}>" if sender else "From: <mailer-daemon@explain.invalid>",
        f"To: {', '.join(f'<{r}>' for r in recipients)}",
        "Subject: Postroom explain",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <explain.{int(now)}@{domain}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "A message that `postroom explain` runs through the flow; it is never sent.",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


async def explain(app: App, request: ExplainRequest) -> Explanation:
    """Run `request` through the node's receiving flow (see the module docstring)."""
    settings = app.settings
    sender = _address(request.sender, "--from") if request.sender else None
    wanted = [_address(r, "--to") for r in request.recipients]
    if not wanted:
        raise ExplainError("give at least one --to address")
    tls = request.tls or bool(request.certificate)
    sender_domain = sender.domain if sender is not None else ""
    tenants = {t.id: t.name for t in app.directory.list_tenants(OPERATOR)}
    srs = _srs(app)
    with app.database.read() as conn:
        view = ConnectionView(conn)
        attributed = attribute_source(
            view,
            peer_ip=request.client_ip,
            tls=tls,
            certificate=request.certificate,
            sender_domain=sender_domain,
        )
        source, owner = attributed.source, attributed.sender_tenant
        attribution = source.attribution

        def resolve(recipient: Address, mx_elsewhere: frozenset[str] = frozenset()) -> Resolution:
            return resolve_recipient(
                view,
                recipient,
                sender_internal_to=attributed.inside,
                service_postmaster=app.service_postmaster(),
                srs=srs,
                null_sender=sender is None,
                source=source,
                mx_elsewhere=mx_elsewhere,
            )

        resolutions = [resolve(recipient) for recipient in wanted]
        for index, found in enumerate(resolutions):
            # As the MX session does: an unknown internal-relay recipient with no on-premises
            # connector may still go by MX when that MX is not this service.
            unrouted = isinstance(found, Rejected) and found.reason is RejectReason.INTERNAL_RELAY_UNROUTED
            if unrouted and await _mx_elsewhere(app, found.recipient.domain):
                resolutions[index] = resolve(found.recipient, frozenset({found.recipient.domain}))
        policies = {r.tenant_id: view.protection(r.tenant_id) for r in resolutions if r.tenant_id is not None}
    stage_one = _attribution_stage(attribution, request, tls, sender_domain, owner, tenants)
    resolutions, connection = await _connection_filter(app, request.client_ip, resolutions, policies)
    with app.database.read() as conn:
        resolutions = [
            Rejected(r.recipient, replies.MAILBOX_FULL, RejectReason.MAILBOX_FULL, r.tenant_id)
            if isinstance(r, Accepted) and mailbox_full(conn, r.owner, None)
            else r
            for r in resolutions
        ]
    accepted = [r for r in resolutions if isinstance(r, Accepted | Relayed)]
    message_id = new_message_id(time.time())
    with app.database.read() as conn:
        view = ConnectionView(conn)
        categorized = (
            categorize(
                view,
                message_id,
                accepted,
                max_recipients=settings.routing.max_expanded_recipients,
                sender=str(sender) if sender else "",
                srs=srs,
                source=source,
            )
            if accepted
            else Categorized()
        )
        routes = categorized.routes
        route_tenants = {r.tenant_id for r in routes if r.tenant_id is not None}
        protections = {t: view.protection(t) for t in route_tenants}
        lists = {r.mailbox_id: view.sender_lists(r.mailbox_id) for r in routes if r.mailbox_id is not None}
        connectors = {t: view.outbound_connectors(t) for t in route_tenants}
    message = request.message or minimal_message(
        str(sender) if sender else "", request.recipients, time.time()
    )
    protection = await _protect(app, request, tls, connection, message, sender, routes, protections, lists)
    route_stages = [await _route(app, route, connectors, tenants) for route in routes]
    events = tuple(_event_text(e.event.value, e.recipient, e.detail) for e in categorized.events)
    return Explanation(
        sender=str(sender) if sender else "<>",
        attribution=stage_one,
        recipients=tuple(_recipient_stage(r, tenants) for r in resolutions),
        protection=protection,
        routes=tuple(route_stages),
        events=events,
        outcome=_outcome(resolutions, protection, routes),
    )


def _address(text: str, option: str) -> Address:
    try:
        return Address.parse(text.strip().strip("<>"))
    except AddressError as error:
        raise ExplainError(f"{option} {text!r} is not an address: {error}") from None


def _srs(app: App) -> Srs | None:
    """The node's SRS when it has its key already (explain never creates it)."""
    settings = app.settings
    if not settings.service.srs_secret_file and not settings.srs_secret_path.exists():
        return None
    return app.srs()


async def _mx_elsewhere(app: App, domain: str) -> bool:
    """Whether `domain`'s MX is somewhere other than this service (a DNS failure: no)."""
    settings = app.settings
    found = await mx_elsewhere(app.resolver, local_endpoints(settings), settings.delivery.smtp_port, domain)
    return found is True


def _ref(connector: InboundConnector, tenants: dict[int, str]) -> ConnectorRef:
    return ConnectorRef(connector.name, connector.type.value, tenants.get(connector.tenant_id, "?"))


def _attribution_stage(
    attribution: Attribution,
    request: ExplainRequest,
    tls: bool,
    sender_domain: str,
    owner: int | None,
    tenants: dict[int, str],
) -> AttributionStage:
    connector = _ref(attribution.connector, tenants) if attribution.connector is not None else None
    matched = tuple(_ref(c, tenants) for c in attribution.candidates)
    if connector is not None:
        how = "its TLS certificate" if attribution.by_certificate else "its IP address"
        summary = (
            f"attributed by {how} to the OnPremises connector {connector.name} of tenant {connector.tenant}"
        )
    elif attribution.ambiguous:
        summary = (
            "not attributed: OnPremises connectors of several tenants match this IP and the sender's domain "
            "tells them apart for none of them"
        )
    elif matched:
        summary = "not attributed to a tenant's on-premises server; Partner connectors match (see below)"
    else:
        summary = "an ordinary Internet client: no inbound connector matches its IP or certificate"
    return AttributionStage(
        client_ip=request.client_ip,
        tls=tls,
        certificate=request.certificate,
        sender_domain=sender_domain,
        sender_tenant=tenants.get(owner, "") if owner is not None else "",
        connector=connector,
        by_certificate=attribution.by_certificate,
        matched=matched,
        ambiguous=attribution.ambiguous,
        summary=summary,
    )


async def _connection_filter(
    app: App,
    client_ip: str,
    resolutions: list[Accepted | Relayed | Rejected],
    policies: dict[int, TenantProtection],
) -> tuple[list[Accepted | Relayed | Rejected], ConnectionVerdict | None]:
    """The connection filter as the MX applies it: at connect (the service lists) and at each accepted
    recipient (its tenant's lists, the DNS blocklists). None: protection is off."""
    connection_filter = app.connection_filter()
    if connection_filter is None:
        return resolutions, None
    check = connection_filter.check(client_ip)
    try:
        refusal = check.connect()
        if refusal is not None:
            refused: list[Accepted | Relayed | Rejected] = [
                Rejected(r.recipient, refusal, RejectReason.IP_BLOCKED, r.tenant_id) for r in resolutions
            ]
            return refused, check.verdict
        decided: list[Accepted | Relayed | Rejected] = []
        for resolution in resolutions:
            if isinstance(resolution, Rejected):
                decided.append(resolution)
                continue
            tenant = resolution.tenant_id
            policy = policies[tenant].connection if tenant is not None else None
            outcome = await check.recipient(tenant, policy)
            if outcome.refusal is not None:
                reason = RejectReason.BLOCKLISTED if outcome.by_blocklist else RejectReason.IP_BLOCKED
                decided.append(Rejected(resolution.recipient, outcome.refusal, reason, tenant))
            else:
                decided.append(resolution)
        return decided, check.verdict
    finally:
        check.close()


def _recipient_stage(resolution: Accepted | Relayed | Rejected, tenants: dict[int, str]) -> RecipientStage:
    tenant = tenants.get(resolution.tenant_id, "") if resolution.tenant_id is not None else ""
    if isinstance(resolution, Accepted):
        owner = resolution.owner
        detail = f"{owner.kind.value} {owner.primary_address} of tenant {tenant}"
        return RecipientStage(
            str(resolution.recipient), "accepted", str(replies.RECIPIENT_OK), tenant, detail
        )
    if isinstance(resolution, Relayed):
        whose = f"as tenant {tenant}'s mail" if tenant else "as the service's own mail"
        detail = f"relayed to {resolution.target} {whose}"
        return RecipientStage(str(resolution.recipient), "relayed", str(replies.RECIPIENT_OK), tenant, detail)
    return RecipientStage(
        str(resolution.recipient), "rejected", str(resolution.reply), tenant, resolution.reason.value
    )


async def _protect(
    app: App,
    request: ExplainRequest,
    tls: bool,
    connection: ConnectionVerdict | None,
    message: bytes,
    sender: Address | None,
    routes: list[RoutedRecipient],
    protections: dict[int, TenantProtection],
    lists: dict[int, MailboxSenderLists],
) -> ProtectionStage:
    protection = build_protection(app.settings, app.resolver)
    if protection is None or connection is None:
        return ProtectionStage(
            enabled=False, connection="protection is off on this node ([protection] enabled)"
        )
    listing = f"{connection.listing.value} {connection.list_name} {connection.entry}".strip()
    live = [r for r in routes if not r.failure]
    if not live:
        await protection.spam_engine.aclose()
        return ProtectionStage(enabled=True, connection=listing)
    facts = MessageFacts(
        client_ip=request.client_ip,
        helo=request.helo or f"[{request.client_ip}]",
        mail_from=str(sender) if sender else "",
        recipients=tuple(r.recipient for r in live),
        direction=Direction.INBOUND,
        tls=tls,
        tenant_ids=tuple(sorted(protections)),
        connection=connection,
    )
    recipients = [RecipientFacts(r.recipient, r.tenant_id, r.mailbox_id) for r in live]
    try:
        inspection = await protection.inspect(message, facts, recipients, protections, lists)
    finally:
        await protection.spam_engine.aclose()
    if inspection.defer is not None:
        return ProtectionStage(
            enabled=True, connection=listing, deferred=str(inspection.defer), detail=dict(inspection.detail)
        )
    auth, malware, spam = inspection.auth, inspection.malware, inspection.spam
    verdicts = tuple(
        RecipientVerdict(
            recipient=route.recipient,
            action=d.action.value,
            verdict=d.verdict.name.lower().replace("_", "-"),
            sfv=d.sfv,
            scl=d.scl,
            policy=d.policy,
            folder=d.folder,
            reply=str(d.reply) if d.reply is not None else "",
        )
        for route, d in zip(live, inspection.dispositions, strict=True)
    )
    return ProtectionStage(
        enabled=True,
        connection=listing,
        spf=f"{auth.spf.result.value} ({auth.spf.domain})" if auth is not None else "",
        dkim=tuple(f"{d.result.value} (d={d.domain})" if d.domain else d.result.value for d in auth.dkim)
        if auth is not None
        else (),
        dmarc=f"{auth.dmarc.result.value} (From {auth.dmarc.from_domain})" if auth is not None else "",
        compauth=f"{auth.compauth.value} reason={auth.compauth_reason:03d}" if auth is not None else "",
        malware=f"{malware.result.value} {' '.join(malware.names)}".strip() if malware is not None else "",
        spam=(
            f"SCL {spam.scl}, BCL {spam.bcl}, {spam.category.value}, {spam.engine}"
            if spam is not None
            else ""
        ),
        authentication_results=auth.header.strip() if auth is not None else "",
        recipients=verdicts,
        detail=dict(inspection.detail),
    )


async def _route(
    app: App,
    route: RoutedRecipient,
    connectors: dict[int, tuple[OutboundConnector, ...]],
    tenants: dict[int, str],
) -> RouteStage:
    tenant = tenants.get(route.tenant_id, "") if route.tenant_id is not None else ""
    sender = route.envelope_sender if route.envelope_sender is not None else ""
    base = RouteStage(
        recipient=route.recipient,
        original_recipient=route.original_recipient,
        tenant=tenant,
        route=route.route.value,
        destination="",
        connector="",
        hosts=(),
        failure=route.failure,
        envelope_sender=sender,
    )
    if route.route is Route.LOCAL:
        return replace(base, destination=f"mailbox {route.recipient} (tenant {tenant}), {route.folder}")
    if route.connector_id is not None:
        found = next(
            (c for c in connectors.get(route.tenant_id or 0, ()) if c.id == route.connector_id), None
        )
        name = found.name if found is not None else f"#{route.connector_id} (removed)"
        smart_hosts = found.smart_hosts if found is not None else ()
        if smart_hosts:
            return replace(
                base,
                destination=f"outbound connector {name}: its smart hosts",
                connector=name,
                hosts=smart_hosts,
            )
        base = replace(base, connector=name)
    domain = route.recipient.rpartition("@")[2]
    label = (
        f"outbound connector {base.connector}: the MX of {domain}"
        if base.connector
        else f"the MX of {domain}"
    )
    try:
        hosts = await mail_hosts(app.resolver, domain)
    except MailHostError as error:
        return replace(base, destination=f"{label}: {error} ({error.reply})")
    shown = tuple(f"{h.name} ({', '.join(h.addresses)})" for h in hosts)
    return replace(base, destination=label, hosts=shown)


def _event_text(kind: str, address: str, detail: dict[str, object]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in detail.items() if v not in ("", None, [], {}))
    return f"{kind} {address}: {shown}" if shown else f"{kind} {address}"


def _outcome(
    resolutions: Sequence[Accepted | Relayed | Rejected],
    protection: ProtectionStage,
    routes: Sequence[RoutedRecipient],
) -> str:
    if not any(isinstance(r, Accepted | Relayed) for r in resolutions):
        return "every recipient is refused at RCPT: the client may not send DATA (503 5.5.1)"
    if protection.deferred:
        return f"the message is deferred at the end of DATA: {protection.deferred}"
    live = protection.recipients
    if live and all(v.action == "reject" for v in live):
        return f"the message is refused at the end of DATA: {live[0].reply}"
    return "250 2.6.0 Queued: the message is accepted (explain stores nothing)"
