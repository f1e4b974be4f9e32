"""Remote delivery: the outbound SMTP client that sends queued mail to other organizations' servers.

`RemoteDelivery` is the queue's `RemoteAgent`. `deliver(attempts)` is given attempts for one
destination domain (by MX, or over one outbound connector) and answers one `RecipientResult` per
recipient, never raising for a delivery problem. Per destination it:

1. prepares each message once: reads `prefix` + blob from the blob store (once per message, however
   many attempts share it), refuses a message with more than `max_hops` Received headers (554 5.4.14,
   the loop guard), and asks the app's hooks (in a worker thread: they read the directory) for the
   destination's remote domain settings, the From domain's DKIM signer and, for a message the tenant
   forwards from outside (it carries our Authentication-Results), the tenant's ARC sealer (RFC 8617:
   the set is made over the octets sent, after any conversion, then the DKIM signature on top);
2. finds the mail hosts (`dns.mail_hosts`: MX by preference, random among equals, implicit MX, null
   MX, NXDOMAIN, DNS failure; a list that points at this service fails 5.4.14);
3. sends the messages over at most `max_connections_per_destination` concurrent connections (a bound
   shared by every `deliver` call of this agent), each carrying at most `max_messages_per_connection`
   messages with RSET between them. A connection tries the hosts in order and each host's addresses;
   a refused or timed-out connection or a greeting other than 220 moves on to the next.

**Outbound connectors** (spec §3.2, §3.6). An attempt whose recipients routing sent over an outbound
connector (`DeliveryAttempt.connector_id`) is delivered per route, (destination, connector): the
`outbound_connector` hook (a worker thread; the directory) gives the connector as it is now. A
connector removed or disabled since routing, or not the sending tenant's, is logged and the route is
delivered by MX as if none had been chosen. Otherwise:

- hosts: the connector's smart hosts in their order (`host`, `host:port`, `[v6]:port`, IP literals;
  a name by its A/AAAA records; at most `MAX_SMART_HOSTS`), or with `use_mx` the destination's MX
  hosts. A host that is this
  service (`LocalEndpoints`) is never used: with none left, 554 5.4.14 (never deliver to ourselves;
  unlike MX delivery, not even for a domain another tenant hosts here);
- TLS by the connector's `tls`: opportunistic as MX delivery (a connector using MX keeps the
  destination's MTA-STS and DANE; smart hosts consult neither); encryption-only: STARTTLS required,
  any certificate; certificate-validation: the chain verified (system CAs and `tls_ca_file`), names
  not checked; domain-validation: the chain and a certificate name matching `tls_domain`
  (`tls_domain_matches`, wildcards either side). Never a plaintext fallback when TLS is required;
- failures answer the spec's codes, which the queue retries for 24 hours and then bounces with:
  DNS failure 4.4.312, timeout 4.4.315, connection refused 4.4.316, no STARTTLS where TLS is required
  or no connection 4.4.317, closed abruptly 4.4.318 (also mid-transaction), a certificate that fails
  validation 4.7.320. A remote server's own replies (RCPT, DATA) settle recipients as usual.

`deliver_traced(attempts, trail)` is `deliver` noting each step (`dns`, `tcp`, `tls`, `message`) in a
`Trail`: connector validation (`delivery.validation`) runs a real delivery through the same code.

Each connection says EHLO with `helo_name` (HELO when EHLO is refused) and STARTTLS whenever the
server offers it. TLS by the destination's policy (`delivery.tls_policy`), per host:

- opportunistic (no MTA-STS, no usable DANE records): the certificate is not verified (RFC 7435). When
  the handshake fails, the same address is tried again in plaintext, logged as a warning (what Postfix
  does with `smtp_tls_security_level = may`); a 454 to STARTTLS goes on in plaintext on the same
  connection;
- MTA-STS `enforce`: only hosts the policy names, only over TLS with a certificate valid for the host
  name (the system's CAs and `tls_ca_file`); anything less skips the host, and when no host is left the
  recipients are deferred 4.7.5 (`TLS_POLICY_FAILED`). Never a plaintext fallback;
- MTA-STS `testing`: delivered as opportunistic, but the handshake is first tried verified and a
  certificate enforce would refuse is logged ("MTA-STS testing: ... sent anyway"), as are hosts the
  policy does not name;
- DANE (authenticated TLSA records for the host, RFC 7672): TLS is required and the certificate is
  judged by the records, not the Web PKI; a mismatch, a refused STARTTLS or a failed handshake defers
  4.7.323 (`DANE_FAILED`), never a plaintext fallback. Only DANE-EE(3) records can match here: Python
  3.11's ssl exposes only the leaf certificate of a peer it did not verify, and DANE-TA(2) needs the
  chain the server sent, so a host whose usable TLSA records are all DANE-TA is deferred (never delivered
  unverified) until the runtime exposes the chain (Python 3.13's `get_unverified_chain`).

The envelope carries SIZE when the server advertises it, and a message larger than the server's SIZE
fails 552 5.3.4 without being sent.
Content negotiation (RFC 6152, RFC 6531): a message with 8-bit body octets goes with BODY=8BITMIME to a
server that offers it; to one that does not, its MIME parts are converted to quoted-printable (text)
or base64, and a message that cannot be converted (no MIME structure, 8-bit inside an attached
message) fails 554 5.6.7. UTF-8 in the header section or the sender needs SMTPUTF8; without it the
message fails 5.6.7; a UTF-8 recipient address alone fails only that recipient.

PIPELINING (RFC 2920): to a server that offers it, a transaction is one write (RSET before every message
but the first of a connection, MAIL FROM, every RCPT TO, DATA: DATA ends the group, §3.1) and the
replies are read in order, each settling its own command; then the message. Without PIPELINING each
command waits for its reply. BDAT (CHUNKING) is not used: DATA carries 7-bit and 8BITMIME content.
The protocol is `smtp.client`, Postroom's own small client: aiosmtplib (5.x) reads one reply
per command and drops reply octets that arrive while no command waits, so it cannot pipeline, and
teaching it would mean replacing its private protocol class (the reasons are in that module).

Outcomes per recipient: a RCPT reply settles its recipient when it is not 2xx (5xx fails it, 4xx
defers it); DATA's final reply settles every accepted recipient. A 421 from the server, a dropped
connection or a timeout defers everything not yet settled on that connection with a 4xx (the
server's 421, or 451 4.4.2), and the connection is not used again. A recipient that was answered
250 after DATA is never sent again by this agent (the queue settles it delivered).

Timeouts (RFC 5321 §4.5.3.2, as settings): `connect_timeout` for the TCP connection and a TLS
handshake, `command_timeout` for the greeting and each command's reply, `data_timeout` for the message
and the reply to its end.

*Security:* every reply comes from a remote server and is untrusted: it is parsed by
`smtp.client` (bounded line length, lines per reply, read-ahead; input after STARTTLS's 220 or
a reply to nothing breaks the connection) and kept only as a code and text in the result. The DNS answers are
bounded by `max_mail_hosts` and `max_host_addresses`. Opportunistic TLS protects against passive
eavesdropping only, and its plaintext fallback lets an active attacker strip it, as it can strip
STARTTLS from the EHLO reply anyway; a destination that requires TLS says so by MTA-STS or DANE.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import io
import logging
import quopri
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.utils import parseaddr
from enum import Enum
from ipaddress import ip_address
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from postroom.config.settings import DeliverySettings
from postroom.delivery.conversion import convert_for_remote_domain
from postroom.delivery.dkim_signing import NotSigned, sign
from postroom.delivery.tls_policy import OutboundTlsPolicy, TlsMode, outbound_tls_policy, verify_dane
from postroom.dns.mail_hosts import MailHost, MailHostError, host_addresses, mail_hosts, without_local
from postroom.dns.mta_sts_cache import StsLookup, StsPolicyCache, StsSource
from postroom.dns.resolver import DnsTemporaryError, NxDomain, Resolver
from postroom.model import replies
from postroom.model.connectors import OutboundConnector, OutboundTls, split_smart_host
from postroom.model.message import count_received, header_section, summarize
from postroom.model.outbound import (
    DeliveryAttempt,
    DkimSigner,
    OutboundRecipient,
    RecipientResult,
    RemoteDomainSettings,
)
from postroom.model.replies import Reply
from postroom.smtp.client import (
    ClientTimeouts,
    ProtocolViolation,
    ReplyTimeout,
    ServerDisconnected,
    ServerReply,
    SmtpClient,
    SmtpClientError,
    TlsFailed,
)

log = logging.getLogger(__name__)

RemoteDomainLookup = Callable[[int | None, str], RemoteDomainSettings]
"""(tenant id, destination domain) -> the remote domain settings that apply; runs in a worker thread."""
DkimSignerLookup = Callable[[int | None, str], DkimSigner | None]
"""(tenant id, From domain) -> the key to sign with, None to send unsigned; runs in a worker thread."""
Sealer = Callable[[bytes], bytes]
"""The octets to send -> the ARC set to prepend (b"" when no seal could be made: sent unsealed)."""
ArcSealerLookup = Callable[[int | None, bytes], Sealer | None]
"""(tenant id, header section) -> the tenant's ARC seal for a message it forwards from outside, None
for any other message; runs in a worker thread."""
OutboundConnectorLookup = Callable[[int], OutboundConnector | None]
"""connector id -> the outbound connector as it is now (None: removed); runs in a worker thread."""


class BlobReader(Protocol):
    """Where the agent reads message bodies (`storage.BlobStore` is one)."""

    def get(self, blob_id: str) -> bytes: ...


MAX_SMART_HOSTS = 20  # smart hosts of one connector tried per delivery, in their order

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _default_remote_domain(tenant_id: int | None, destination: str) -> RemoteDomainSettings:
    return RemoteDomainSettings()


def _no_signer(tenant_id: int | None, from_domain: str) -> DkimSigner | None:
    return None


def _no_sealer(tenant_id: int | None, head: bytes) -> Sealer | None:
    return None


def _nowhere(destination: str) -> bool:
    return False


def _no_connector(connector_id: int) -> OutboundConnector | None:
    return None


@dataclass(frozen=True, slots=True)
class TrailNote:
    """One thing a delivery did: its `step` (`dns`, `tcp`, `tls`, `message`), whether it went well,
    what happened, and the reply its recipients got when it was the failure."""

    step: str
    ok: bool
    detail: str
    reply: Reply | None = None


@dataclass(slots=True)
class Trail:
    """The steps of one delivery, in order, for connector validation (`delivery.validation`), which
    passes one to `RemoteDelivery.deliver_traced`; an ordinary delivery keeps none."""

    notes: list[TrailNote] = field(default_factory=list)

    def note(self, step: str, ok: bool, detail: str, reply: Reply | None = None) -> None:
        self.notes.append(TrailNote(step, ok, detail, reply))


def _note(trail: Trail | None, step: str, ok: bool, detail: str, reply: Reply | None = None) -> None:
    if trail is not None:
        trail.note(step, ok, detail, reply)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one route's attempts go: the key its connections are bounded and cached under (the
    destination, or the destination and the connector), the hosts to try in order, the TLS policy
    (the destination's for MX; none for a connector's smart hosts), and the outbound connector whose
    TLS settings and failure codes apply (None: MX delivery)."""

    key: str
    hosts: list[MailHost]
    policy: OutboundTlsPolicy
    connector: OutboundConnector | None = None
    trail: Trail | None = None


@dataclass(frozen=True, slots=True)
class LocalEndpoints:
    """What counts as this service when it appears in a destination's MX list: host names (and the
    suffix under which the service's MX hosts live), public addresses, and the listeners' sockets."""

    names: frozenset[str] = frozenset()
    name_suffixes: tuple[str, ...] = ()
    addresses: frozenset[str] = frozenset()
    sockets: frozenset[tuple[str, int]] = frozenset()

    def holds(self, host: MailHost, port: int) -> bool:
        name = host.name.lower()
        if name in self.names or any(name.endswith("." + suffix) for suffix in self.name_suffixes):
            return True
        return any(a in self.addresses or (a, port) in self.sockets for a in host.addresses)


@dataclass(slots=True)
class _Message:
    """One attempt made ready to send: its octets and what they need of the server."""

    attempt: DeliveryAttempt
    content: bytes
    signer: DkimSigner | None
    domain: RemoteDomainSettings | None  # the destination's remote domain settings
    utf8_headers: bool  # the header section or the sender holds UTF-8: needs SMTPUTF8
    eight_bit: bool  # the body holds 8-bit octets: needs 8BITMIME or a conversion
    seven_bit: bytes | None = None  # the converted form, made at most once
    signed: dict[bool, bytes] = field(default_factory=dict)  # by "7-bit converted": the octets sent
    refused: Reply | None = None  # the message fails for every recipient (loop, unreadable)
    sealer: Sealer | None = None  # the forwarding tenant's ARC seal


@dataclass(slots=True)
class _Outcome:
    """What one message on one connection settled, and whether the connection can go on."""

    results: list[RecipientResult] = field(default_factory=list)
    broken: Reply | None = None  # the connection is unusable; unsettled recipients get this reply


class _Connection:
    """One SMTP client connection to one address of one mail host, after EHLO (and STARTTLS)."""

    def __init__(
        self,
        client: SmtpClient,
        host: MailHost,
        address: str,
        connector: OutboundConnector | None = None,
        where: str = "",
    ) -> None:
        self.client = client
        self.host = host
        self.address = address
        self.connector = connector  # the outbound connector it serves: its failure codes apply
        self.where = where or f"{host.name}[{address}]"  # host[address]:port, for replies and logs
        self.tls = ""
        self.used = False  # a transaction was begun: the next one starts with RSET
        self.sent = 0  # messages sent over it (bounded by max_messages_per_connection)

    def supports(self, keyword: str) -> bool:
        return self.client.supports(keyword)

    @property
    def size_limit(self) -> int:
        value = self.client.extensions.get("SIZE", "")
        return int(value) if value.isdigit() else 0

    def result(self, recipient: OutboundRecipient, reply: Reply) -> RecipientResult:
        return RecipientResult(recipient.queue_id, reply, self.host.name, self.address, self.tls)


class _DestinationSlots:
    """A semaphore per destination domain bounding concurrent connections; forgotten when unused."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def __call__(self, destination: str) -> asyncio.Semaphore:
        semaphore, users = self._slots.get(destination, (asyncio.Semaphore(self._limit), 0))
        self._slots[destination] = (semaphore, users + 1)
        return semaphore

    def release(self, destination: str) -> None:
        semaphore, users = self._slots[destination]
        if users <= 1:
            del self._slots[destination]
        else:
            self._slots[destination] = (semaphore, users - 1)


class RemoteDelivery:
    """The remote delivery agent (`queue.RemoteAgent`); see the module docstring."""

    def __init__(
        self,
        settings: DeliverySettings,
        resolver: Resolver,
        blobs: BlobReader,
        *,
        helo_name: str,
        max_hops: int,
        local: LocalEndpoints | None = None,
        remote_domain: RemoteDomainLookup = _default_remote_domain,
        dkim_signer: DkimSignerLookup = _no_signer,
        arc_sealer: ArcSealerLookup = _no_sealer,
        sts: StsPolicyCache | None = None,
        hosted_here: Callable[[str], bool] = _nowhere,
        outbound_connector: OutboundConnectorLookup = _no_connector,
    ) -> None:
        self.settings = settings
        self.outbound_connector = outbound_connector
        # Whether a destination domain is one this service hosts (for another tenant): then its MX is
        # this service, and mail crosses the tenant boundary through it as mail from outside would.
        self.hosted_here = hosted_here
        self.resolver = resolver
        self.blobs = blobs
        self.helo_name = helo_name
        self.max_hops = max_hops
        self.local = local or LocalEndpoints()
        self.remote_domain = remote_domain
        self.dkim_signer = dkim_signer
        self.arc_sealer = arc_sealer
        self._slots = _DestinationSlots(settings.max_connections_per_destination)
        # Connections kept open after a batch, per destination, until their time (the connection cache).
        self._idle: dict[str, list[tuple[_Connection, float]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.sts = sts
        self._opportunistic = _opportunistic_context()
        self._verified = _verified_context(settings.tls_ca_file)
        self._chain_verified = _verified_context(settings.tls_ca_file, check_hostname=False)

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]:
        return await self._deliver(attempts, None)

    async def deliver_traced(
        self, attempts: Sequence[DeliveryAttempt], trail: Trail
    ) -> list[RecipientResult]:
        """`deliver`, noting each step it takes in `trail` (connector validation)."""
        return await self._deliver(attempts, trail)

    async def _deliver(
        self, attempts: Sequence[DeliveryAttempt], trail: Trail | None
    ) -> list[RecipientResult]:
        by_route: dict[tuple[str, int | None], list[DeliveryAttempt]] = {}
        for attempt in attempts:
            by_route.setdefault((attempt.destination.lower(), attempt.connector_id), []).append(attempt)
        outcomes = await asyncio.gather(
            *(
                self._deliver_to(destination, connector_id, group, trail)
                for (destination, connector_id), group in by_route.items()
            )
        )
        return [result for outcome in outcomes for result in outcome]

    async def _deliver_to(
        self,
        destination: str,
        connector_id: int | None,
        attempts: list[DeliveryAttempt],
        trail: Trail | None,
    ) -> list[RecipientResult]:
        messages = await self._prepare(destination, attempts)
        results = [
            RecipientResult(r.queue_id, m.refused)
            for m in messages
            if m.refused
            for r in m.attempt.recipients
        ]
        ready = [m for m in messages if m.refused is None]
        if not ready:
            return results
        connector = None if connector_id is None else await self._connector(connector_id, ready)
        plan = await self._plan(destination, connector, trail)
        if isinstance(plan, Reply):
            return results + [RecipientResult(r.queue_id, plan) for m in ready for r in m.attempt.recipients]
        per_connection = self.settings.max_messages_per_connection
        batches = [ready[i : i + per_connection] for i in range(0, len(ready), per_connection)]
        slot = await self._slots(plan.key)
        try:
            sent = await asyncio.gather(*(self._send_batch(slot, plan, batch) for batch in batches))
        finally:
            self._slots.release(plan.key)
        return results + [result for batch_results in sent for result in batch_results]

    # --- where a route goes -----------------------------------------------------------------------

    async def _connector(self, connector_id: int, messages: list[_Message]) -> OutboundConnector | None:
        """The outbound connector routing chose, as it is now; None (the route is delivered by MX, as
        if none had been chosen) when it was removed or disabled since, or is not the messages'
        tenant's (never another organization's settings)."""
        connector = await asyncio.to_thread(self.outbound_connector, connector_id)
        tenants = {m.attempt.message.tenant_id for m in messages}
        if connector is None:
            log.warning("outbound connector %d was removed after routing: delivering by MX", connector_id)
        elif not connector.enabled:
            log.warning("outbound connector %r is disabled: delivering by MX", connector.name)
        elif tenants != {connector.tenant_id}:
            log.error("outbound connector %d is not the sending tenant's: delivering by MX", connector_id)
        else:
            return connector
        return None

    async def _plan(
        self, destination: str, connector: OutboundConnector | None, trail: Trail | None
    ) -> _Plan | Reply:
        """The hosts and TLS rules for `destination`: a connector's smart hosts (its TLS setting
        rules; MTA-STS and DANE are not consulted), else the destination's MX hosts with its TLS
        policy (a connector that uses MX with opportunistic TLS keeps the destination's MTA-STS and
        DANE, one that requires TLS applies its own setting instead). A route over a connector never
        goes to this service itself (5.4.14), and its DNS failures answer 4.4.312."""
        settings = self.settings
        key = destination if connector is None else f"{destination} via connector {connector.id}"
        if connector is not None and not connector.use_mx:
            found = await self._smart_hosts(connector, trail)
            if isinstance(found, Reply):
                return found
            return _Plan(key, found, _no_policy(destination), connector, trail)
        try:
            hosts = await mail_hosts(
                self.resolver,
                destination,
                max_hosts=settings.max_mail_hosts,
                max_addresses=settings.max_host_addresses,
            )
            if connector is not None or not await asyncio.to_thread(self.hosted_here, destination):
                hosts = without_local(hosts, lambda host: self.local.holds(host, settings.smtp_port))
        except MailHostError as error:
            reply = error.reply
            if connector is not None and reply not in (replies.NULL_MX, replies.MAIL_HOST_IS_LOCAL):
                reply = replies.CONNECTOR_DNS_FAILED.with_text(
                    f"{replies.CONNECTOR_DNS_FAILED.text}: {error}"
                )
            log.info("no route to %s: %s (%s)", destination, reply, error)
            _note(trail, "dns", False, f"MX of {destination}: {error}", reply)
            return reply
        _note(trail, "dns", True, f"MX of {destination}: {_hosts_text(hosts, settings.smtp_port)}")
        if connector is not None and connector.requires_tls:
            return _Plan(key, hosts, _no_policy(destination), connector, trail)
        policy = await outbound_tls_policy(
            self.resolver, destination, [h.name for h in hosts], sts=self.sts, port=settings.smtp_port
        )
        allowed = _allowed_hosts(policy, hosts)
        if isinstance(allowed, Reply):
            log.info("no host of %s meets its TLS policy: %s", destination, allowed)
            _note(trail, "tls", False, f"no MX host of {destination} meets its TLS policy", allowed)
            return allowed
        return _Plan(key, allowed, policy, connector, trail)

    async def _smart_hosts(self, connector: OutboundConnector, trail: Trail | None) -> list[MailHost] | Reply:
        """The connector's smart hosts in order, each with its addresses (an IP as given, a name by its
        A/AAAA records) and port; 4.4.312 when none resolves, 5.4.14 when each is this service."""
        settings = self.settings
        hosts: list[MailHost] = []
        problems: list[str] = []
        for index, entry in enumerate(connector.smart_hosts[:MAX_SMART_HOSTS]):
            try:
                name, port = split_smart_host(entry)
            except ValueError as error:
                problems.append(str(error))
                continue
            try:
                addresses: tuple[str, ...] = (str(ip_address(name)),)
            except ValueError:
                try:
                    addresses = await host_addresses(self.resolver, name, settings.max_host_addresses)
                except NxDomain:
                    problems.append(f"{name}: no such domain (NXDOMAIN)")
                    continue
                except DnsTemporaryError as error:
                    problems.append(f"{name}: {error}")
                    continue
                if not addresses:
                    problems.append(f"{name}: no A or AAAA record")
                    continue
            hosts.append(MailHost(name, index, addresses, port))
        if not hosts:
            reply = replies.CONNECTOR_DNS_FAILED.with_text(
                f"{replies.CONNECTOR_DNS_FAILED.text}: {'; '.join(problems) or 'no smart host'}"
            )
            log.info("connector %r: %s", connector.name, reply)
            _note(trail, "dns", False, "; ".join(problems), reply)
            return reply
        kept = [h for h in hosts if not self.local.holds(h, h.port or settings.smtp_port)]
        for host in hosts:
            if host not in kept:
                log.warning(
                    "connector %r: smart host %s is this service: not used", connector.name, host.name
                )
        if not kept:
            _note(
                trail,
                "dns",
                False,
                f"{_hosts_text(hosts, settings.smtp_port)}: this service",
                replies.SMART_HOST_IS_LOCAL,
            )
            return replies.SMART_HOST_IS_LOCAL
        unresolved = f" (not found: {'; '.join(problems)})" if problems else ""
        _note(trail, "dns", True, f"smart hosts: {_hosts_text(kept, settings.smtp_port)}{unresolved}")
        return kept

    # --- preparing messages -------------------------------------------------------------------------

    async def _prepare(self, destination: str, attempts: list[DeliveryAttempt]) -> list[_Message]:
        """Read each message once and ask the hooks; runs in a worker thread (files, the directory)."""
        return await asyncio.to_thread(self._prepare_all, destination, attempts)

    def _prepare_all(self, destination: str, attempts: list[DeliveryAttempt]) -> list[_Message]:
        contents: dict[tuple[str, bytes], bytes] = {}
        # The hooks read the directory: asked once per tenant (and From domain) in a call, not per message.
        domains: dict[int | None, RemoteDomainSettings] = {}
        signers: dict[tuple[int | None, str], DkimSigner | None] = {}
        prepared = []
        for attempt in attempts:
            message = attempt.message
            key = (message.blob_id, message.prefix)
            try:
                if key not in contents:
                    contents[key] = message.prefix + self.blobs.get(message.blob_id)
            except (OSError, LookupError) as error:  # BlobMissingError: a corrupt store, reported
                log.error("message %s: cannot read its content: %s", message.id, error)
                prepared.append(_Message(attempt, b"", None, None, False, False, refused=replies.LOCAL_ERROR))
                continue
            head = header_section(contents[key])
            if count_received(head) > self.max_hops:
                prepared.append(
                    _Message(attempt, b"", None, None, False, False, refused=replies.ROUTING_LOOP)
                )
                continue
            tenant = message.tenant_id
            if tenant not in domains:
                domains[tenant] = self.remote_domain(tenant, destination)
            domain_settings = domains[tenant]
            content = convert_for_remote_domain(contents[key], domain_settings)
            head = header_section(content)
            from_domain = parseaddr(summarize(head).from_header)[1].rpartition("@")[2].lower()
            if from_domain and (tenant, from_domain) not in signers:
                signers[tenant, from_domain] = self.dkim_signer(tenant, from_domain)
            signer = signers.get((tenant, from_domain))
            prepared.append(
                _Message(
                    attempt,
                    content,
                    signer,
                    domain_settings,
                    utf8_headers=not head.isascii() or not attempt.sender.isascii(),
                    eight_bit=not content[len(head) :].isascii(),
                    sealer=self.arc_sealer(tenant, head),
                )
            )
        return prepared

    # --- connections ------------------------------------------------------------------------------

    async def _send_batch(
        self, slot: asyncio.Semaphore, plan: _Plan, batch: list[_Message]
    ) -> list[RecipientResult]:
        destination = plan.key
        async with slot:
            results: list[RecipientResult] = []
            connection: _Connection | Reply | None = None
            keep = False
            try:
                for index, message in enumerate(batch):
                    if isinstance(connection, _Connection) and connection.sent >= self._per_connection:
                        await connection.client.quit()
                        connection = None
                    if connection is None:
                        connection = await self._cached(destination) or await self._connect(plan)
                    if isinstance(connection, Reply):
                        failed = connection
                        return results + [
                            RecipientResult(r.queue_id, failed)
                            for m in batch[index:]
                            for r in m.attempt.recipients
                        ]
                    outcome = await self._send(connection, message)
                    connection.sent += 1
                    results += outcome.results
                    _note_outcome(plan.trail, connection, outcome)
                    if outcome.broken is not None:
                        settled = {result.queue_id for result in outcome.results}
                        results += [
                            connection.result(r, outcome.broken)
                            for m in batch[index:]
                            for r in m.attempt.recipients
                            if r.queue_id not in settled
                        ]
                        return results
                keep = True
                return results
            finally:
                if isinstance(connection, _Connection):
                    if keep and self._parkable(destination, connection):
                        self._park(destination, connection)
                    else:
                        await connection.client.quit()  # inside the slot: it counts until it is closed

    # --- the connection cache -----------------------------------------------------------------------
    # A connection that finished its batch in good order stays open `connection_cache_seconds` for the
    # next batch to the same destination (Postfix's connection cache does the same, 2 s by default): a
    # busy destination gets a few long connections, not one per scheduler turn. Before reuse it is
    # checked with RSET, so a connection the server closed meanwhile costs a new one, never a message.

    @property
    def _per_connection(self) -> int:
        return self.settings.max_messages_per_connection

    async def _cached(self, destination: str) -> _Connection | None:
        """An idle connection to `destination` that still answers RSET, or None."""
        idle = self._idle.get(destination)
        now = asyncio.get_running_loop().time()
        while idle:
            connection, until = idle.pop()
            if until > now and connection.client.is_open and connection.sent < self._per_connection:
                try:
                    await connection.client.write_commands([b"RSET"])
                    reply = await connection.client.read_reply()
                except SmtpClientError:
                    reply = None
                if reply is not None and reply.code == 250:
                    connection.used = False  # just reset: the next transaction needs no RSET
                    return connection
            self._quit_later(connection)
        self._idle.pop(destination, None)
        return None

    def _parkable(self, destination: str, connection: _Connection) -> bool:
        idle = len(self._idle.get(destination, ()))
        return (
            self.settings.connection_cache_seconds > 0
            and connection.client.is_open
            and connection.sent < self._per_connection
            and idle < self.settings.max_connections_per_destination
        )

    def _park(self, destination: str, connection: _Connection) -> None:
        seconds = self.settings.connection_cache_seconds
        loop = asyncio.get_running_loop()
        self._idle.setdefault(destination, []).append((connection, loop.time() + seconds))
        loop.call_later(seconds, self._expire, destination)

    def _expire(self, destination: str) -> None:
        """Close the idle connections of `destination` whose time is up."""
        idle = self._idle.get(destination)
        if idle is None:
            return
        now = asyncio.get_running_loop().time()
        for entry in [entry for entry in idle if entry[1] <= now]:
            idle.remove(entry)
            self._quit_later(entry[0])
        if not idle:
            del self._idle[destination]

    def _quit_later(self, connection: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(connection.client.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Quit every idle connection (the node stops)."""
        for idle in self._idle.values():
            for connection, _ in idle:
                self._quit_later(connection)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connect(self, plan: _Plan) -> _Connection | Reply:
        """A connection to the first host and address that greets with 220 and meets the TLS policy
        (or the connector's TLS setting), or the reply for all (a TLS failure outranks a connection
        failure)."""
        last: Reply = replies.CONNECT_FAILED
        for host in plan.hosts:
            for address in host.addresses:
                level = _first_level(plan.policy, host.name)
                while True:
                    try:
                        return await self._open(host, address, plan, level)
                    except _Downgrade as downgrade:
                        log.warning("%s[%s]: %s", host.name, address, downgrade)
                        level = downgrade.level
                    except _Refused as refused:
                        if not (last.enhanced or "").startswith("4.7."):
                            last = refused.reply
                        log.info("%s[%s]: %s", host.name, address, refused)
                        break
        return last

    async def _open(self, host: MailHost, address: str, plan: _Plan, level: _TlsLevel) -> _Connection:
        """One connection at `level`: raises `_Refused` (try the next address) or `_Downgrade` (try this
        address again at a lower level: only where neither the policy nor the connector requires TLS).
        Over a connector, failures answer the spec's codes (`_connector_failure`)."""
        settings = self.settings
        connector, trail = plan.connector, plan.trail
        port = host.port or settings.smtp_port
        where = _where(host, address, port)
        timeouts = ClientTimeouts(settings.connect_timeout, settings.command_timeout, settings.data_timeout)
        try:
            client = await SmtpClient.connect(address, port, timeouts)
        except (OSError, TimeoutError) as error:
            reply = replies.CONNECT_FAILED if connector is None else _connector_failure(error, where)
            _note(trail, "tcp", False, f"{where}: {_describe(error)}", reply)
            raise _Refused(reply, f"connect failed: {_describe(error)}") from error
        connection = _Connection(client, host, address, connector, where)
        step = "tcp"  # what a failure is noted as: the connection and greeting, then TLS
        try:
            greeting = await client.read_reply()
            if greeting.code != 220:
                reply = _reply(greeting.code, greeting.text)
                if connector is not None:
                    reply = _with_where(replies.CONNECTOR_CANNOT_CONNECT, where, f"greeted with {reply}")
                raise _Refused(reply, f"greeting refused: {greeting.code} {greeting.text[:200]}")
            await self._hello(connection)
            banner = greeting.text.split("\n", 1)[0][:200]
            _note(trail, "tcp", True, f"{where}: {banner}")
            step = "tls"
            if connector is not None and connector.requires_tls:
                await self._connector_tls(connection, connector, where)
                _note(trail, "tls", True, _tls_text(connection, connector))
                return connection
            await self._policy_tls(connection, plan.policy, level)
            _note(trail, "tls", True, _tls_text(connection, connector))
        except _Refused as refused:
            _note(trail, step, False, f"{where}: {refused}", refused.reply)
            await client.quit()
            raise
        except _Downgrade as downgrade:
            _note(trail, "tls", False, f"{where}: {downgrade}")
            await client.quit()
            raise
        except SmtpClientError as error:
            await client.quit()
            reply = replies.CONNECT_FAILED if connector is None else _connector_failure(error, where)
            _note(trail, step, False, f"{where}: {error}", reply)
            raise _Refused(reply, f"session set-up failed: {error}") from error
        return connection

    async def _policy_tls(self, connection: _Connection, policy: OutboundTlsPolicy, level: _TlsLevel) -> None:
        """STARTTLS by the destination's TLS policy (MTA-STS, DANE, else opportunistic)."""
        client, host, address = connection.client, connection.host, connection.address
        records = policy.tlsa(host.name)
        required = policy.tls_required(host.name)
        failure = replies.DANE_FAILED if records or policy.dane.get(host.name) else replies.TLS_POLICY_FAILED
        if level is _TlsLevel.PLAIN:
            return
        if not client.supports("starttls"):
            if required:
                raise _Refused(failure, "TLS is required but the server does not offer STARTTLS")
            return
        reply = await client.command(b"STARTTLS")
        if reply.code != 220:
            if required:
                raise _Refused(failure, f"TLS required by policy refused: {_reply(reply.code, reply.text)}")
            log.warning("%s[%s]: STARTTLS refused (%s), sending in plaintext", host.name, address, reply.code)
            return
        context = self._verified if level is _TlsLevel.VERIFIED else self._opportunistic
        try:
            await client.starttls(context, host.name)
        except TlsFailed as error:
            if required:
                raise _Refused(failure, f"TLS required by policy failed: {error}") from error
            if level is _TlsLevel.VERIFIED:  # MTA-STS testing: report, then deliver as usual
                raise _Downgrade(
                    _TlsLevel.OPPORTUNISTIC,
                    f"MTA-STS testing: the policy of {policy.destination} would refuse this host: {error}"
                    " (sent anyway)",
                ) from error
            raise _Downgrade(
                _TlsLevel.PLAIN, f"{error}; retrying in plaintext (opportunistic TLS)"
            ) from error
        certificate = client.peer_certificate()
        if records and not verify_dane([certificate] if certificate else [], records, host.name):
            raise _Refused(replies.DANE_FAILED, "no TLSA record matches the server's certificate")
        connection.tls = client.tls
        await self._hello(connection)

    async def _connector_tls(self, connection: _Connection, connector: OutboundConnector, where: str) -> None:
        """STARTTLS as a connector that requires TLS says (spec §3.2 `TlsSettings`), never a plaintext
        fallback: encryption-only takes any certificate; certificate-validation needs a chain to a
        trusted CA (the system's and `tls_ca_file`), whatever its names; domain-validation needs that
        and a name matching `tls_domain`. Not offered or refused: 4.4.317; a certificate that fails:
        4.7.320."""
        client = connection.client
        setting = connector.tls
        if not client.supports("starttls"):
            reply = _with_where(
                replies.CONNECTOR_CANNOT_CONNECT, where, f"TLS is required ({setting}), STARTTLS not offered"
            )
            raise _Refused(
                reply, f"the connector requires TLS ({setting}); the server does not offer STARTTLS"
            )
        answer = await client.command(b"STARTTLS")
        if answer.code != 220:
            refused = _reply(answer.code, answer.text)
            reply = _with_where(replies.CONNECTOR_CANNOT_CONNECT, where, f"STARTTLS refused: {refused}")
            raise _Refused(reply, f"the connector requires TLS ({setting}); STARTTLS refused: {refused}")
        context = self._opportunistic if setting is OutboundTls.ENCRYPTION_ONLY else self._chain_verified
        try:
            await client.starttls(context, connection.host.name)
        except TlsFailed as error:
            if isinstance(error.__cause__, ssl.SSLCertVerificationError):
                detail = f"certificate not trusted: {error.__cause__.verify_message}"
                reply = _with_where(replies.CONNECTOR_CERTIFICATE_FAILED, where, detail)
            else:
                reply = _with_where(replies.CONNECTOR_CANNOT_CONNECT, where, str(error))
            raise _Refused(reply, f"the connector requires TLS ({setting}): {error}") from error
        if setting is OutboundTls.DOMAIN_VALIDATION:
            names = certificate_dns_names(client.peer_certificate())
            if not tls_domain_matches(connector.tls_domain, names):
                shown = ", ".join(names[:5]) or "no DNS name"
                detail = f"the certificate names {shown}, not {connector.tls_domain}"
                raise _Refused(
                    _with_where(replies.CONNECTOR_CERTIFICATE_FAILED, where, detail),
                    f"the connector validates the domain {connector.tls_domain}: {detail}",
                )
        connection.tls = client.tls
        await self._hello(connection)

    async def _hello(self, connection: _Connection) -> None:
        client = connection.client
        reply = await client.ehlo(self.helo_name)
        if reply.code == 250:
            return
        if reply.code == 421 or not client.is_open:
            raise _Refused(_reply(reply.code, reply.text), "EHLO refused")
        reply = await client.command(b"HELO " + self.helo_name.encode("ascii"))
        if reply.code != 250:
            raise _Refused(_reply(reply.code, reply.text), "HELO refused")

    # --- one message ------------------------------------------------------------------------------

    async def _send(self, connection: _Connection, message: _Message) -> _Outcome:
        attempt = message.attempt
        outcome = _Outcome()
        smtputf8 = connection.supports("smtputf8")
        recipients = list(attempt.recipients)
        if _CONTROL.search(attempt.sender):  # never a command injected through an address
            outcome.results = [connection.result(r, replies.BAD_SENDER_SYNTAX) for r in recipients]
            return outcome
        outcome.results = [
            connection.result(r, replies.BAD_RECIPIENT_SYNTAX)
            for r in recipients
            if _CONTROL.search(r.recipient)
        ]
        recipients = [r for r in recipients if not _CONTROL.search(r.recipient)]
        if not recipients:
            return outcome
        if message.utf8_headers and not smtputf8:
            outcome.results += [connection.result(r, replies.EIGHT_BIT_REFUSED) for r in recipients]
            return outcome
        if not smtputf8:
            outcome.results += [
                connection.result(r, replies.EIGHT_BIT_REFUSED)
                for r in recipients
                if not r.recipient.isascii()
            ]
            recipients = [r for r in recipients if r.recipient.isascii()]
            if not recipients:
                return outcome
        content = message.content
        seven_bit = False
        body_param: list[bytes] = []
        if message.eight_bit:
            if connection.supports("8bitmime"):
                body_param = [b"BODY=8BITMIME"]
            else:
                if message.seven_bit is None:
                    message.seven_bit = await asyncio.to_thread(to_seven_bit, content) or b""
                if not message.seven_bit:
                    outcome.results += [connection.result(r, replies.EIGHT_BIT_REFUSED) for r in recipients]
                    return outcome
                content, seven_bit = message.seven_bit, True
        content = await self._signed(message, content, seven_bit)
        limit = connection.size_limit
        if limit and len(content) > limit:
            outcome.results += [connection.result(r, replies.REMOTE_SIZE_EXCEEDED) for r in recipients]
            return outcome
        params = [f"SIZE={len(content)}".encode()] if connection.supports("size") else []
        params += body_param
        if message.utf8_headers or not all(r.recipient.isascii() for r in recipients):
            params.append(b"SMTPUTF8")
        mail = b" ".join([f"MAIL FROM:<{attempt.sender}>".encode(), *params])
        rcpts = [f"RCPT TO:<{r.recipient}>".encode() for r in recipients]
        try:
            if connection.supports("pipelining"):
                await self._pipelined(connection, outcome, message, mail, rcpts, recipients, content)
            else:
                await self._one_by_one(connection, outcome, message, mail, rcpts, recipients, content)
        except SmtpClientError as error:
            outcome.broken = _broken(error, connection)
        return outcome

    async def _pipelined(
        self,
        connection: _Connection,
        outcome: _Outcome,
        message: _Message,
        mail: bytes,
        rcpts: list[bytes],
        recipients: list[OutboundRecipient],
        content: bytes,
    ) -> None:
        """RFC 2920: [RSET,] MAIL, every RCPT and DATA in one write, their replies read in order. DATA
        ends the group (§3.1); its 354 is answered with the message, or with a lone `.` when no
        recipient was accepted (the client must check every reply, §3.1)."""
        client = connection.client
        group = ([b"RSET"] if connection.used else []) + [mail, *rcpts, b"DATA"]
        await client.write_commands(group)
        if connection.used:
            reset = await client.read_reply()
            if reset.code != 250:
                outcome.broken = _reply(reset.code, reset.text)
                return
        connection.used = True
        reply = await client.read_reply()
        mail_failed = reply.code != 250
        if mail_failed:
            self._settle_all(connection, outcome, recipients, reply)
            if outcome.broken is not None:
                return
        accepted: list[OutboundRecipient] = []
        for recipient in recipients:
            reply = await client.read_reply()
            if mail_failed:
                continue  # 503s to RCPT after a refused MAIL: the MAIL reply settled them
            if reply.code in (250, 251):
                accepted.append(recipient)
                continue
            result = _reply(reply.code, reply.text)
            outcome.results.append(connection.result(recipient, result))
            if reply.code == 421:
                outcome.broken = result
                return
        reply = await client.read_reply()
        if reply.code != 354:
            if accepted:
                self._settle_all(connection, outcome, accepted, reply)
                self._log_sent(connection, outcome, message, accepted)
            elif reply.code == 421:
                outcome.broken = _reply(reply.code, reply.text)
            return
        if not accepted:
            await client.send_content(b"")  # only the terminating ".": nobody to deliver to
            return
        await self._content(connection, outcome, message, accepted, content)

    async def _one_by_one(
        self,
        connection: _Connection,
        outcome: _Outcome,
        message: _Message,
        mail: bytes,
        rcpts: list[bytes],
        recipients: list[OutboundRecipient],
        content: bytes,
    ) -> None:
        """Without PIPELINING: RSET between messages, then each command waits for its reply."""
        client = connection.client
        if connection.used:
            reset = await client.command(b"RSET")
            if reset.code != 250:
                outcome.broken = _reply(reset.code, reset.text)
                return
        connection.used = True
        reply = await client.command(mail)
        if reply.code != 250:
            self._settle_all(connection, outcome, recipients, reply)
            return
        accepted: list[OutboundRecipient] = []
        for recipient, rcpt in zip(recipients, rcpts, strict=True):
            reply = await client.command(rcpt)
            if reply.code in (250, 251):
                accepted.append(recipient)
                continue
            result = _reply(reply.code, reply.text)
            outcome.results.append(connection.result(recipient, result))
            if reply.code == 421:
                outcome.broken = result
                return
        if not accepted:
            return
        reply = await client.command(b"DATA")
        if reply.code != 354:
            self._settle_all(connection, outcome, accepted, reply)
            self._log_sent(connection, outcome, message, accepted)
            return
        await self._content(connection, outcome, message, accepted, content)

    async def _content(
        self,
        connection: _Connection,
        outcome: _Outcome,
        message: _Message,
        accepted: list[OutboundRecipient],
        content: bytes,
    ) -> None:
        """The message after 354; the reply to its end settles every accepted recipient."""
        reply = await connection.client.send_content(content)
        self._settle_all(connection, outcome, accepted, reply)
        self._log_sent(connection, outcome, message, accepted)

    async def _signed(self, message: _Message, content: bytes, seven_bit: bool) -> bytes:
        """The octets to send: sealed (ARC) by the forwarding tenant and signed by the From domain's
        key when they have one (after any 7-bit conversion, so both cover what the server receives);
        unsealed or unsigned when that fails."""
        if message.signer is None and message.sealer is None:
            return content
        if seven_bit not in message.signed:
            message.signed[seven_bit] = await asyncio.to_thread(self._seal_and_sign, message, content)
        return message.signed[seven_bit]

    @staticmethod
    def _seal_and_sign(message: _Message, content: bytes) -> bytes:
        if message.sealer is not None:
            content = message.sealer(content) + content
        if message.signer is None:
            return content
        try:
            return sign(content, message.signer)
        except NotSigned as error:
            log.warning("message %s sent unsigned: %s", message.attempt.message.id, error.reason)
            return content

    def _settle_all(
        self,
        connection: _Connection,
        outcome: _Outcome,
        recipients: list[OutboundRecipient],
        reply: ServerReply,
    ) -> None:
        settled = _reply(reply.code, reply.text)
        outcome.results += [connection.result(r, settled) for r in recipients]
        if reply.code == 421:
            outcome.broken = settled

    def _log_sent(
        self, connection: _Connection, outcome: _Outcome, message: _Message, accepted: list[OutboundRecipient]
    ) -> None:
        reply = outcome.results[-1].reply
        log.info(
            "%s id=%s relay=%s[%s]%s tls=%s from=<%s> %s (%s)",
            "sent" if reply.is_positive else "deferred" if reply.is_temporary else "bounced",
            message.attempt.message.id,
            connection.host.name,
            connection.address,
            f" connector={connection.connector.name}" if connection.connector is not None else "",
            connection.tls or "none",
            message.attempt.sender,
            " ".join(f"to=<{r.recipient}>" for r in accepted),
            reply,
        )


class _TlsLevel(Enum):
    """How a connection protects itself, strongest first: what a failed handshake falls back to."""

    VERIFIED = "verified"  # the certificate checked against the CAs and the MX host name
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, the certificate not checked
    PLAIN = "plain"  # no STARTTLS: after a failed opportunistic handshake only


def _first_level(policy: OutboundTlsPolicy, host: str) -> _TlsLevel:
    """Verified for MTA-STS (enforce: required; testing: to report what enforce would refuse), unless
    DANE records judge the certificate instead; opportunistic otherwise."""
    if policy.mode is TlsMode.OPPORTUNISTIC or policy.tlsa(host):
        return _TlsLevel.OPPORTUNISTIC
    return _TlsLevel.VERIFIED


class _Downgrade(Exception):
    """Try this address again at `level`: a TLS handshake failed where the policy allows less."""

    def __init__(self, level: _TlsLevel, detail: str) -> None:
        super().__init__(detail)
        self.level = level


class _Refused(Exception):
    """This address cannot take the mail now; `reply` is what its recipients get if none can."""

    def __init__(self, reply: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply


def _opportunistic_context() -> ssl.SSLContext:
    """TLS whenever offered, certificate not verified (RFC 7435): better than plaintext, no more."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _verified_context(ca_file: str, *, check_hostname: bool = True) -> ssl.SSLContext:
    """TLS with the certificate verified against the system's CAs (and `ca_file`) and the MX host name:
    MTA-STS enforce (RFC 8461 §4.2); without `check_hostname`, the chain only (an outbound connector's
    certificate validation; its domain validation checks `tls_domain` itself)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = check_hostname
    return context


def _no_policy(destination: str) -> OutboundTlsPolicy:
    """Opportunistic TLS and nothing else: a connector's smart hosts, whose TLS its own setting rules."""
    return OutboundTlsPolicy(destination, TlsMode.OPPORTUNISTIC, StsLookup(destination, None, StsSource.NONE))


def certificate_dns_names(der: bytes | None) -> list[str]:
    """The DNS names of a certificate (DER): its subjectAltName dNSNames, else its CN; [] when none
    or when it does not parse."""
    if not der:
        return []
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        return []
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in names.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return dns
    return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def tls_domain_matches(tls_domain: str, names: Sequence[str]) -> bool:
    """Whether a certificate naming `names` passes an outbound connector's domain validation of
    `tls_domain`: the same name; for `*.x.com`, any name under x.com (or the certificate's own
    `*.x.com`); for a plain name, a certificate wildcard `*.` standing for its leftmost label."""
    wanted = tls_domain.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == wanted:
            return True
        if wanted.startswith("*.") and not name.startswith("*") and name.endswith(wanted[1:]):
            return True
        if name.startswith("*.") and not wanted.startswith("*"):
            label, dot, parent = wanted.partition(".")
            if label and dot and parent == name[2:]:
                return True
    return False


def _connector_failure(error: BaseException, where: str) -> Reply:
    """The spec's reply (§3.6) for a connection over an outbound connector that failed with `error`."""
    if isinstance(error, ConnectionRefusedError):
        reply = replies.CONNECTOR_REFUSED
    elif isinstance(error, TimeoutError | ReplyTimeout):
        reply = replies.CONNECTOR_TIMEOUT
    elif isinstance(
        error, ServerDisconnected | ConnectionResetError | ConnectionAbortedError | BrokenPipeError
    ):
        reply = replies.CONNECTOR_CLOSED
    else:
        reply = replies.CONNECTOR_CANNOT_CONNECT
    return _with_where(reply, where, _describe(error))


def _with_where(reply: Reply, where: str, detail: str) -> Reply:
    return reply.with_text(f"{reply.text} ({where}: {detail})"[:400])


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError | ReplyTimeout) and not str(error):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _where(host: MailHost, address: str, port: int) -> str:
    """`name[address]:port`, as Postfix logs a peer; `[address]:port` for a host given as an address."""
    return f"{'' if host.name == address else host.name}[{address}]:{port}"


def _hosts_text(hosts: Sequence[MailHost], default_port: int) -> str:
    return ", ".join(
        f"{host.name}{'' if host.addresses == (host.name,) else ' (' + ', '.join(host.addresses) + ')'}"
        f" port {host.port or default_port}"
        for host in hosts
    )


def _tls_text(connection: _Connection, connector: OutboundConnector | None) -> str:
    """What a connection's TLS came to, for a validation's `tls` step."""
    if not connection.tls:
        return (
            "no TLS: the server did not offer it, or the handshake failed; not required (opportunistic TLS)"
        )
    setting = connector.tls if connector is not None else OutboundTls.OPPORTUNISTIC
    checked = {
        OutboundTls.OPPORTUNISTIC: "opportunistic, the certificate not checked",
        OutboundTls.ENCRYPTION_ONLY: "encryption only, certificate not checked",
        OutboundTls.CERTIFICATE_VALIDATION: "certificate chain validated",
        OutboundTls.DOMAIN_VALIDATION: "certificate validated for "
        + (connector.tls_domain if connector is not None else ""),
    }[setting]
    return f"{connection.tls}: {checked}"


def _note_outcome(trail: Trail | None, connection: _Connection, outcome: _Outcome) -> None:
    """The `message` step of a traced delivery: each recipient's reply, or why the connection broke."""
    if trail is None:
        return
    for result in outcome.results:
        reply = result.reply
        trail.note(
            "message", reply.is_positive, f"{connection.where}: {reply}", None if reply.is_positive else reply
        )
    if outcome.broken is not None:
        trail.note("message", False, f"{connection.where}: {outcome.broken}", outcome.broken)


def _allowed_hosts(policy: OutboundTlsPolicy, hosts: list[MailHost]) -> list[MailHost] | Reply:
    """The hosts the destination's TLS policy lets us try, or the reply when it leaves none: MTA-STS
    enforce keeps the hosts its `mx:` patterns name (testing only logs the others); a host whose TLSA
    lookup failed is skipped (RFC 7672 §2.2: no fallback to plain delivery)."""
    kept = []
    for host in hosts:
        if not policy.allows(host.name) or policy.dane_unavailable(host.name):
            continue
        if policy.mode is TlsMode.MTA_STS_TESTING and not policy.would_allow(host.name):
            log.info(
                "MTA-STS testing: %s is not in the policy of %s (sent anyway)", host.name, policy.destination
            )
        kept.append(host)
    if kept:
        return kept
    if any(policy.dane_unavailable(host.name) for host in hosts):
        return replies.DANE_FAILED
    return replies.TLS_POLICY_FAILED


def _reply(code: int, message: str) -> Reply:
    """A remote server's reply as a `Reply`: the enhanced code from its first line when it has one."""
    lines = message.split("\n") if message else [""]
    match = _ENHANCED.match(lines[0])
    enhanced = match.group(1) if match else None
    if enhanced is not None:
        lines = [_ENHANCED.sub("", line, count=1) for line in lines]
    return Reply(code, enhanced, "\n".join(lines)[:2000])


def _broken(error: SmtpClientError, connection: _Connection) -> Reply:
    """The reply for recipients left unsettled when a connection broke: over a connector, the spec's
    timeout (4.4.315) or closed-abruptly (4.4.318) code."""
    if isinstance(error, ProtocolViolation):
        return replies.REMOTE_PROTOCOL_ERROR
    if connection.connector is not None:
        return _connector_failure(error, connection.where)
    if isinstance(error, ReplyTimeout):
        return replies.REMOTE_TIMEOUT
    return replies.REMOTE_DISCONNECTED


def to_seven_bit(content: bytes) -> bytes | None:
    """`content` with every 8-bit MIME leaf part re-encoded (text: quoted-printable, else base64), or
    None when that is impossible: no MIME-Version, or 8-bit octets inside an attached message."""
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    if parsed.get("MIME-Version") is None:
        return None
    for part in parsed.walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or data.isascii():
            continue
        if part.get_content_maintype() == "message":
            return None
        del part["Content-Transfer-Encoding"]
        if part.get_content_maintype() == "text":
            encoded = quopri.encodestring(data.replace(b"\r\n", b"\n")).decode("ascii")
            part["Content-Transfer-Encoding"] = "quoted-printable"
        else:
            encoded = base64.encodebytes(data).decode("ascii")
            part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(encoded)
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=email.policy.compat32.clone(linesep="\r\n")).flatten(
        parsed
    )
    converted = out.getvalue()
    return converted if converted.isascii() else None
