"""Remote delivery: the outbound SMTP client that sends queued mail to other organizations' servers.

`RemoteDelivery` is the queue's `RemoteAgent`. `deliver(attempts)` is given attempts for one
destination domain and answers one `RecipientResult` per recipient, never raising for a delivery
problem. Per destination it:

1. prepares each message once: reads `prefix` + blob from the blob store (once per message, however
   many attempts share it), refuses a message with more than `max_hops` Received headers (554 5.4.14,
   the loop guard), and asks the app's hooks (in a worker thread: they read the directory) for the
   destination's remote domain settings and the From domain's DKIM signer;
2. finds the mail hosts (`dns.mail_hosts`: MX by preference, random among equals, implicit MX, null
   MX, NXDOMAIN, DNS failure; a list that points at this service fails 5.4.14);
3. sends the messages over at most `max_connections_per_destination` concurrent connections (a bound
   shared by every `deliver` call of this agent), each carrying at most `max_messages_per_connection`
   messages with RSET between them. A connection tries the hosts in order and each host's addresses;
   a refused or timed-out connection or a greeting other than 220 moves on to the next.

Each connection says EHLO with `helo_name` (HELO when EHLO is refused) and STARTTLS whenever the
server offers it (opportunistic: the certificate is not verified). The envelope carries SIZE when the
server advertises it, and a message larger than the server's SIZE fails 552 5.3.4 without being sent.
Content negotiation (RFC 6152, RFC 6531): a message with 8-bit body octets goes with BODY=8BITMIME to a
server that offers it; to one that does not, its MIME parts are converted to quoted-printable (text)
or base64, and a message that cannot be converted (no MIME structure, 8-bit inside an attached
message) fails 554 5.6.7. UTF-8 in the header section or the sender needs SMTPUTF8; without it the
message fails 5.6.7; a UTF-8 recipient address alone fails only that recipient.

PIPELINING: aiosmtplib (5.x) does not pipeline: its protocol awaits each reply before the next command
and drops reply octets that arrive while no command is waiting, so several commands cannot be written
before their replies are read. Every command here therefore waits for its reply, even where the
server offers PIPELINING: one round trip per MAIL and per RCPT. A pipelining client needs its own
reply reader (a known gap; the reuse of connections keeps the cost per message small).

Outcomes per recipient: a RCPT reply settles its recipient when it is not 2xx (5xx fails it, 4xx
defers it); DATA's final reply settles every accepted recipient. A 421 from the server, a dropped
connection or a timeout defers everything not yet settled on that connection with a 4xx (the
server's 421, or 451 4.4.2), and the connection is not used again. A recipient that was answered
250 after DATA is never sent again by this agent (the queue settles it delivered).

Timeouts (RFC 5321 §4.5.3.2, as settings): `connect_timeout` for the TCP connection and a TLS
handshake, `command_timeout` for the greeting and each command's reply, `data_timeout` for the message
and the reply to its end.

*Security:* every reply comes from a remote server and is untrusted: it is parsed by aiosmtplib
(bounded line and reply length) and kept only as a code and text in the result. The DNS answers are
bounded by `max_mail_hosts` and `max_host_addresses`. Opportunistic TLS protects against passive
eavesdropping only; a destination that requires verified TLS says so by MTA-STS or DANE.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import io
import logging
import quopri
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.utils import parseaddr

import aiosmtplib
from aiosmtplib import SMTPResponse

from postroom.config.settings import DeliverySettings
from postroom.delivery.conversion import convert_for_remote_domain
from postroom.delivery.dkim_signing import NotSigned, sign
from postroom.delivery.tls_policy import OutboundTlsPolicy, TlsMode, outbound_tls_policy, verify_dane
from postroom.dns.mail_hosts import MailHost, MailHostError, mail_hosts, without_local
from postroom.dns.mta_sts_cache import StsPolicyCache
from postroom.dns.resolver import Resolver
from postroom.model import replies
from postroom.model.message import count_received, header_section, summarize
from postroom.model.outbound import (
    DeliveryAttempt,
    DkimSigner,
    OutboundRecipient,
    RecipientResult,
    RemoteDomainSettings,
)
from postroom.model.replies import Reply
from postroom.storage import BlobStore

log = logging.getLogger(__name__)

RemoteDomainLookup = Callable[[int | None, str], RemoteDomainSettings]
"""(tenant id, destination domain) -> the remote domain settings that apply; runs in a worker thread."""
DkimSignerLookup = Callable[[int | None, str], DkimSigner | None]
"""(tenant id, From domain) -> the key to sign with, None to send unsigned; runs in a worker thread."""

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


def _default_remote_domain(tenant_id: int | None, destination: str) -> RemoteDomainSettings:
    return RemoteDomainSettings()


def _no_signer(tenant_id: int | None, from_domain: str) -> DkimSigner | None:
    return None


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


@dataclass(slots=True)
class _Outcome:
    """What one message on one connection settled, and whether the connection can go on."""

    results: list[RecipientResult] = field(default_factory=list)
    broken: Reply | None = None  # the connection is unusable; unsettled recipients get this reply


class _Connection:
    """One SMTP client connection to one address of one mail host, after EHLO (and STARTTLS)."""

    def __init__(self, client: aiosmtplib.SMTP, host: MailHost, address: str) -> None:
        self.client = client
        self.host = host
        self.address = address
        self.tls = ""

    def supports(self, keyword: str) -> bool:
        return self.client.supports_extension(keyword)

    @property
    def size_limit(self) -> int:
        value = self.client.esmtp_extensions.get("size", "")
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
        blobs: BlobStore,
        *,
        helo_name: str,
        max_hops: int,
        local: LocalEndpoints | None = None,
        remote_domain: RemoteDomainLookup = _default_remote_domain,
        dkim_signer: DkimSignerLookup = _no_signer,
        sts: StsPolicyCache | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.blobs = blobs
        self.helo_name = helo_name
        self.max_hops = max_hops
        self.local = local or LocalEndpoints()
        self.remote_domain = remote_domain
        self.dkim_signer = dkim_signer
        self._slots = _DestinationSlots(settings.max_connections_per_destination)
        self.sts = sts
        self._opportunistic = _opportunistic_context()
        self._verified = _verified_context(settings.tls_ca_file)

    async def deliver(self, attempts: Sequence[DeliveryAttempt]) -> list[RecipientResult]:
        by_destination: dict[str, list[DeliveryAttempt]] = {}
        for attempt in attempts:
            by_destination.setdefault(attempt.destination.lower(), []).append(attempt)
        outcomes = await asyncio.gather(
            *(self._deliver_to(destination, group) for destination, group in by_destination.items())
        )
        return [result for outcome in outcomes for result in outcome]

    async def _deliver_to(self, destination: str, attempts: list[DeliveryAttempt]) -> list[RecipientResult]:
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
        settings = self.settings
        try:
            hosts = await mail_hosts(
                self.resolver,
                destination,
                max_hosts=settings.max_mail_hosts,
                max_addresses=settings.max_host_addresses,
            )
            hosts = without_local(hosts, lambda host: self.local.holds(host, settings.smtp_port))
        except MailHostError as error:
            log.info("no route to %s: %s (%s)", destination, error.reply, error)
            return results + [
                RecipientResult(r.queue_id, error.reply) for m in ready for r in m.attempt.recipients
            ]
        policy = await outbound_tls_policy(
            self.resolver, destination, [h.name for h in hosts], sts=self.sts, port=settings.smtp_port
        )
        allowed = _allowed_hosts(policy, hosts)
        if isinstance(allowed, Reply):
            log.info("no host of %s meets its TLS policy: %s", destination, allowed)
            return results + [
                RecipientResult(r.queue_id, allowed) for m in ready for r in m.attempt.recipients
            ]
        hosts = allowed
        per_connection = settings.max_messages_per_connection
        batches = [ready[i : i + per_connection] for i in range(0, len(ready), per_connection)]
        slot = await self._slots(destination)
        try:
            sent = await asyncio.gather(*(self._send_batch(slot, hosts, policy, batch) for batch in batches))
        finally:
            self._slots.release(destination)
        return results + [result for batch_results in sent for result in batch_results]

    # --- preparing messages -------------------------------------------------------------------------

    async def _prepare(self, destination: str, attempts: list[DeliveryAttempt]) -> list[_Message]:
        """Read each message once and ask the hooks; runs in a worker thread (files, the directory)."""
        return await asyncio.to_thread(self._prepare_all, destination, attempts)

    def _prepare_all(self, destination: str, attempts: list[DeliveryAttempt]) -> list[_Message]:
        contents: dict[tuple[str, bytes], bytes] = {}
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
            domain_settings = self.remote_domain(message.tenant_id, destination)
            content = convert_for_remote_domain(contents[key], domain_settings)
            head = header_section(content)
            from_domain = parseaddr(summarize(head).from_header)[1].rpartition("@")[2].lower()
            signer = self.dkim_signer(message.tenant_id, from_domain) if from_domain else None
            prepared.append(
                _Message(
                    attempt,
                    content,
                    signer,
                    domain_settings,
                    utf8_headers=not head.isascii() or not attempt.sender.isascii(),
                    eight_bit=not content[len(head) :].isascii(),
                )
            )
        return prepared

    # --- connections ------------------------------------------------------------------------------

    async def _send_batch(
        self, slot: asyncio.Semaphore, hosts: list[MailHost], policy: OutboundTlsPolicy, batch: list[_Message]
    ) -> list[RecipientResult]:
        async with slot:
            connection = await self._connect(hosts, policy)
            if isinstance(connection, Reply):
                return [RecipientResult(r.queue_id, connection) for m in batch for r in m.attempt.recipients]
            results: list[RecipientResult] = []
            try:
                for index, message in enumerate(batch):
                    outcome = _Outcome()
                    if index:
                        outcome.broken = await self._reset(connection)
                    if outcome.broken is None:
                        outcome = await self._send(connection, message)
                    results += outcome.results
                    if outcome.broken is not None:
                        settled = {result.queue_id for result in outcome.results}
                        results += [
                            connection.result(r, outcome.broken)
                            for m in batch[index:]
                            for r in m.attempt.recipients
                            if r.queue_id not in settled
                        ]
                        break
            finally:
                await _quit(connection.client)
            return results

    async def _connect(self, hosts: list[MailHost], policy: OutboundTlsPolicy) -> _Connection | Reply:
        """A connection to the first host and address that greets with 220 and meets the TLS policy,
        or the reply for all (a TLS policy failure outranks a connection failure)."""
        last: Reply = replies.CONNECT_FAILED
        for host in hosts:
            for address in host.addresses:
                try:
                    return await self._open(host, address, policy)
                except _Refused as refused:
                    if not (last.enhanced or "").startswith("4.7."):
                        last = refused.reply
                    log.info("%s[%s]: %s", host.name, address, refused)
        return last

    async def _open(self, host: MailHost, address: str, policy: OutboundTlsPolicy) -> _Connection:
        settings = self.settings
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, (address, settings.smtp_port)), settings.connect_timeout
            )
        except (OSError, TimeoutError) as error:
            sock.close()
            raise _Refused(replies.CONNECT_FAILED, f"connect failed: {error or 'timeout'}") from error
        client = aiosmtplib.SMTP(
            sock=sock, timeout=settings.command_timeout, local_hostname=self.helo_name, start_tls=False
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectResponseError as error:
            client.close()
            raise _Refused(_reply(error.code, error.message), "greeting refused") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            client.close()
            raise _Refused(replies.CONNECT_FAILED, f"no greeting: {error}") from error
        connection = _Connection(client, host, address)
        records = policy.tlsa(host.name)
        failure = replies.DANE_FAILED if records or policy.dane.get(host.name) else replies.TLS_POLICY_FAILED
        verified = policy.mode is TlsMode.MTA_STS_ENFORCE and not records
        try:
            await self._hello(connection)
            if not connection.supports("starttls"):
                if policy.tls_required(host.name):
                    raise _Refused(failure, "TLS is required but the server does not offer STARTTLS")
                return connection
            try:
                await client.starttls(
                    server_hostname=host.name,
                    tls_context=self._verified if verified else self._opportunistic,
                    timeout=settings.connect_timeout,
                )
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as error:
                if policy.tls_required(host.name):
                    raise _Refused(failure, f"TLS required by policy failed: {error}") from error
                raise
            if records and not verify_dane(_peer_chain(client), records, host.name):
                raise _Refused(replies.DANE_FAILED, "no TLSA record matches the server's certificate")
            connection.tls = _tls_version(client)
            await self._hello(connection)
        except _Refused:
            await _quit(client)
            raise
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
            await _quit(client)
            raise _Refused(replies.CONNECT_FAILED, f"session set-up failed: {error}") from error
        return connection

    async def _hello(self, connection: _Connection) -> None:
        client = connection.client
        try:
            await client.ehlo(hostname=self.helo_name)
        except aiosmtplib.SMTPHeloError as error:
            if error.code == 421 or not client.is_connected:
                raise _Refused(_reply(error.code, error.message), "EHLO refused") from error
            response = await client.helo(hostname=self.helo_name)
            if response.code != 250:
                raise _Refused(_reply(response.code, response.message), "HELO refused") from None

    async def _reset(self, connection: _Connection) -> Reply | None:
        """RSET between messages; the reply that breaks the connection, or None."""
        try:
            response = await connection.client.execute_command(b"RSET")
        except aiosmtplib.SMTPException as error:
            return _broken(error)
        return None if response.code == 250 else _reply(response.code, response.message)

    # --- one message ------------------------------------------------------------------------------

    async def _send(self, connection: _Connection, message: _Message) -> _Outcome:
        attempt = message.attempt
        outcome = _Outcome()
        smtputf8 = connection.supports("smtputf8")
        recipients = list(attempt.recipients)
        if message.utf8_headers and not smtputf8:
            outcome.results = [connection.result(r, replies.EIGHT_BIT_REFUSED) for r in recipients]
            return outcome
        if not smtputf8:
            outcome.results = [
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
        needs_utf8 = message.utf8_headers or not all(r.recipient.isascii() for r in recipients)
        if needs_utf8:
            params.append(b"SMTPUTF8")
        client = connection.client
        try:
            response = await client.execute_command(b"MAIL", f"FROM:<{attempt.sender}>".encode(), *params)
            if response.code != 250:
                return self._settle_all(connection, outcome, recipients, response)
            accepted: list[OutboundRecipient] = []
            for recipient in recipients:
                response = await client.execute_command(b"RCPT", f"TO:<{recipient.recipient}>".encode())
                if response.code in (250, 251):
                    accepted.append(recipient)
                    continue
                reply = _reply(response.code, response.message)
                outcome.results.append(connection.result(recipient, reply))
                if response.code == 421:
                    outcome.broken = reply
                    return outcome
            if not accepted:
                return outcome
            try:
                response = await client.data(content, timeout=self.settings.data_timeout)
            except aiosmtplib.SMTPDataError as error:
                response = SMTPResponse(error.code, error.message)
            reply = _reply(response.code, response.message)
            outcome.results += [connection.result(r, reply) for r in accepted]
            if response.code == 421:
                outcome.broken = reply
            self._log_sent(connection, message, accepted, reply)
        except aiosmtplib.SMTPException as error:
            outcome.broken = _broken(error)
        return outcome

    async def _signed(self, message: _Message, content: bytes, seven_bit: bool) -> bytes:
        """The octets to send: signed by the From domain's key when it has one (after any 7-bit
        conversion, so the signature covers what the server receives); unsigned when signing fails."""
        if message.signer is None:
            return content
        if seven_bit not in message.signed:
            try:
                message.signed[seven_bit] = await asyncio.to_thread(sign, content, message.signer)
            except NotSigned as error:
                log.warning("message %s sent unsigned: %s", message.attempt.message.id, error.reason)
                message.signed[seven_bit] = content
        return message.signed[seven_bit]

    def _settle_all(
        self,
        connection: _Connection,
        outcome: _Outcome,
        recipients: list[OutboundRecipient],
        response: SMTPResponse,
    ) -> _Outcome:
        reply = _reply(response.code, response.message)
        outcome.results += [connection.result(r, reply) for r in recipients]
        if response.code == 421:
            outcome.broken = reply
        return outcome

    def _log_sent(
        self, connection: _Connection, message: _Message, accepted: list[OutboundRecipient], reply: Reply
    ) -> None:
        log.info(
            "%s id=%s relay=%s[%s] tls=%s from=<%s> %s (%s)",
            "sent" if reply.is_positive else "deferred" if reply.is_temporary else "bounced",
            message.attempt.message.id,
            connection.host.name,
            connection.address,
            connection.tls or "none",
            message.attempt.sender,
            " ".join(f"to=<{r.recipient}>" for r in accepted),
            reply,
        )


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


def _verified_context(ca_file: str) -> ssl.SSLContext:
    """TLS with the certificate verified against the system's CAs (and `ca_file`) and the MX host name:
    MTA-STS enforce (RFC 8461 §4.2)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


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


def _peer_chain(client: aiosmtplib.SMTP) -> list[bytes]:
    """The server's certificate (DER). Python 3.11's ssl gives only the leaf of an unverified peer, so
    DANE-EE(3) records match and DANE-TA(2) ones (which need the chain) do not."""
    ssl_object = client.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return []
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _tls_version(client: aiosmtplib.SMTP) -> str:
    ssl_object = client.get_transport_info("ssl_object")
    return (ssl_object.version() or "TLS") if isinstance(ssl_object, ssl.SSLObject) else "TLS"


def _reply(code: int, message: str) -> Reply:
    """A remote server's reply as a `Reply`: the enhanced code from its first line when it has one."""
    lines = message.split("\n") if message else [""]
    match = _ENHANCED.match(lines[0])
    enhanced = match.group(1) if match else None
    if enhanced is not None:
        lines = [_ENHANCED.sub("", line, count=1) for line in lines]
    return Reply(code, enhanced, "\n".join(lines)[:2000])


def _broken(error: aiosmtplib.SMTPException) -> Reply:
    if isinstance(error, aiosmtplib.SMTPTimeoutError):
        return replies.REMOTE_TIMEOUT
    if isinstance(error, aiosmtplib.SMTPResponseException):
        reply = _reply(error.code, error.message)
        return reply if reply.is_temporary else replies.REMOTE_PROTOCOL_ERROR
    return replies.REMOTE_DISCONNECTED


async def _quit(client: aiosmtplib.SMTP) -> None:
    """Say QUIT politely when the connection is still up; close it whatever happens."""
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await asyncio.wait_for(client.quit(), 10.0)
    client.close()


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
