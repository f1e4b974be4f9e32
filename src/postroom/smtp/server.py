"""The SMTP listener: asyncio sockets around the sans-IO core, one task and one session per connection.

`SmtpListener` binds its addresses (`start`, port 0 picks a free port and `bound` says which; or it
serves the listening `sockets` a supervisor bound for it, see `app.workers`), and for
every accepted connection runs one task that moves bytes between the socket and `SmtpServerProtocol` and
asks the application's `SmtpSession` each decision. Replies are written once the core has consumed all
the input it has, so a pipelined group of commands gets its replies in one write.

Guarantees. Session calls for one connection are sequential and in protocol order; `close()` is called
exactly once however the connection ends. Time (421 4.4.2, then close): `command_timeout` while waiting
for a command, `data_timeout` while waiting for message octets (both restart when input comes), and two
bounds that input does not restart: `max_session_time` for the whole connection, and `min_data_rate`
in DATA/BDAT, measured over each `data_rate_window` once `data_rate_grace` has passed. Connection limits
(421 4.7.0, then close, before any session is made): `max_connections` on the listener,
`max_connections_per_ip` per client address, `max_connections_per_prefix` per client network (IPv4
/`ipv4_prefix`, IPv6 /`ipv6_prefix`), and the last `reserved_connections` slots only for networks that
hold fewer than `busy_prefix_connections`. Refused RCPTs past `refusal_slowdown` in a session are
answered only after `refusal_delay` seconds each (the core ends the session at
`max_refused_recipients`). `stop(grace)` stops accepting, closes idle connections with 421 4.3.2 at
once, lets connections in a transaction finish it (they are closed with 421 4.3.2 at the next command
after it), and after `grace` seconds closes whatever is left the same way.

AUTH. With `auth` (an `AuthPolicy`) the listener offers SMTP AUTH (the submission role): the core runs
the SASL exchange and the session's `authenticate` decides each completed one; every failed AUTH is
logged with the client address (never the password). Without it AUTH is not offered (the MX role:
502 5.5.1). A STARTTLS listener with `tls_required` offers AUTH only after STARTTLS; an implicit-TLS
listener offers it at once. The command timeout applies while the core waits for a SASL response.

PROXY protocol. With `proxies` (a `TrustedProxies`) the listener sits behind TCP load balancers: a
connection from a trusted address must begin with a PROXY header (v1 or v2, `smtp.proxy_protocol`),
read off the socket before the greeting and before an implicit-TLS handshake, exactly to its last
octet, within `header_timeout` seconds; the client it names is the connection's client from then on
(`ConnectionInfo.peer_ip`, and the per-address and per-network limits, which are checked only then).
A missing, malformed, too long or late header closes the connection without a word (logged at info
with the balancer's address); at most `max_connections` balancer connections wait for their header.
Anyone else is a direct client, and on every listener (with `proxies` or not) a PROXY header as the
first octets of a session gets `500 5.5.1` and the connection closes; nothing it claimed is used. On
an implicit-TLS listener with `proxies`, the first octets of a direct client are looked at before the
handshake for the same reason (the refusal is then in plaintext).

Memory. A message whose content passes `spool_threshold` octets is written to a spool file in
`spool_dir` while it is received (in a worker thread, with its SHA-256 computed on the way), so a
session holds at most about `spool_threshold` + 256 KiB of it in memory; the session gets a
`MessageContent` naming the file. The octets of messages held in memory are counted in the node's
`MemoryBudget`, which every listener of the node shares; while they reach its limit, DATA and BDAT get
452 4.3.1.
A spool file is deleted when its message is refused, aborted or answered (the session may have moved it
into the blob store); at `start` the files left in `spool_dir` by a process that is gone are deleted.

Metrics: every accepted TCP connection counts in `postroom_smtp_connections_total` (refused ones too),
and each admitted one in `postroom_smtp_connections_open` while it is served.

Client certificates. With `client_certificates` (the MX role) STARTTLS asks the client for a TLS
client certificate (`smtp.client_certificates`); a certificate OpenSSL verified reaches the session
in `TlsInfo` (`peer_subject` as `CN=...,O=...` with RFC 4514 short names and escaped values,
`peer_sans` as `DNS:name`). A certificate that does not verify fails the handshake; that client is
then not asked again for a day, so its next try gets through (see that module for why).

Failure behaviour: an exception from a session method is logged with its traceback and the client gets
451 4.3.0 (421 4.3.0 at connect, and the connection closes); the session continues. A spool file that
cannot be written (a full disk) ends the connection with 421 4.3.0 (logged) and nothing is
acknowledged. A failed TLS handshake or a lost connection ends the connection quietly (logged).
Nothing internal is ever sent to the client.

Security: reads untrusted network input; all parsing, and the SMTP smuggling and bare LF rules, are in
`smtp.protocol` (and PROXY headers in `smtp.proxy_protocol`, parsed only from trusted balancers).
This module bounds what it buffers: when more than `_HIGH_WATER` octets wait unparsed (a client
pipelining while a commit is in flight) it stops reading until the core catches up, and a client that
does not read its replies is dropped after `command_timeout`. Plaintext sent after STARTTLS and
before the handshake is discarded by the core. A PROXY header is read with at most
`MAX_HEADER_OCTETS` held, and a stranger can make the node hold a pending implicit-TLS connection only
as long as a handshake may take (`command_timeout`), as without balancers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import itertools
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from postroom import metrics
from postroom.config.settings import ListenAddress, SmtpLimits
from postroom.model import replies
from postroom.model.replies import Reply
from postroom.smtp.client_certificates import ClientCertificates
from postroom.smtp.protocol import (
    AuthReceived,
    HeloReceived,
    MailFromReceived,
    MessageReceived,
    MessageRefused,
    RcptToReceived,
    RecipientRefused,
    SmtpServerProtocol,
    StartTlsRequested,
    TransactionReset,
)
from postroom.smtp.proxy_protocol import (
    MAX_HEADER_OCTETS,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    looks_like_header,
    parse_header,
)
from postroom.smtp.sasl import AuthPolicy
from postroom.smtp.session import ConnectionInfo, MessageContent, SmtpSession, SmtpSessionFactory, TlsInfo

logger = logging.getLogger(__name__)

_HIGH_WATER = 256 * 1024  # unparsed octets held before reading pauses
_SPOOL_WRITE = 256 * 1024  # octets of a spooled message gathered before each write to its spool file
_SPOOL_SUFFIX = ".spool"
_spool_names = itertools.count()


def network_of(peer_ip: str, limits: SmtpLimits) -> str:
    """The client network a connection counts against: IPv4 /`ipv4_prefix`, IPv6 /`ipv6_prefix`."""
    return _network_of(peer_ip, limits.ipv4_prefix, limits.ipv6_prefix)


# Parsing the address and making the network cost more than the rest of a connection's set-up; most
# connections come from addresses seen recently. Bounded: a client with many addresses only evicts.
@functools.lru_cache(maxsize=4096)
def _network_of(peer_ip: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return peer_ip  # not an IP address (a Unix socket): its own network
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


_T = TypeVar("_T")


class MemoryBudget:
    """Octets of message content held in memory by every SMTP session of a node, against one limit.

    The node's listeners share one; they all run on the node's event loop, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @property
    def spent(self) -> bool:
        return self.held >= self.limit


class SmtpListener:
    """One SMTP listener (an MX endpoint or a submission port) on one or more addresses."""

    def __init__(
        self,
        name: str,
        addresses: tuple[ListenAddress, ...],
        limits: SmtpLimits,
        hostname: str,
        factory: SmtpSessionFactory,
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        *,
        spool_dir: Path,
        memory: MemoryBudget,
        auth: AuthPolicy | None = None,
        hidden_extensions: frozenset[str] = frozenset(),
        sockets: tuple[socket.socket, ...] = (),
        proxies: TrustedProxies | None = None,
        client_certificates: ClientCertificates | None = None,
    ) -> None:
        if implicit_tls and ssl_context is None:
            raise ValueError(f"listener {name!r}: implicit TLS needs an SSL context (a certificate and key)")
        if auth is not None and auth.tls_required and ssl_context is None:
            raise ValueError(
                f"listener {name!r}: AUTH after TLS needs an SSL context (a certificate and key)"
            )
        self.name = name
        self.addresses = addresses
        self.limits = limits
        self.hostname = hostname
        self.factory = factory
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.auth = auth
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self.spool_dir = spool_dir
        self._per_ip: dict[str, int] = {}
        self._per_network: dict[str, int] = {}
        self.memory = memory  # the node's, shared with its other listeners
        self.hidden_extensions = hidden_extensions  # EHLO keywords not advertised (test sinks, labs)
        self._bound: tuple[ListenAddress, ...] = ()
        self._draining = False
        self.sockets = sockets  # listening sockets bound by a supervisor (`app.workers`): used, not bound
        self.accepted = metrics.CONNECTIONS.labels(name)  # every TCP connection, refused ones too
        self._open = metrics.CONNECTIONS_OPEN.labels(name)  # the connections served (admitted)
        self.proxies = proxies  # the balancers whose connections start with a PROXY header
        # STARTTLS asks for a client certificate (the MX role); None: asks for none.
        self.client_certificates = client_certificates
        self._gates: set[asyncio.Task[None]] = set()  # connections whose header (or TLS) is not read yet
        self._awaiting_header: set[asyncio.Task[None]] = set()  # of those, the balancers' (bounded)

    @property
    def bound(self) -> tuple[ListenAddress, ...]:
        """The addresses actually listened on (with the real port when 0 was asked for)."""
        return self._bound

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> tuple[ListenAddress, ...]:
        """Bind every address and start accepting; returns `bound`. Raises OSError when one cannot bind."""
        loop = asyncio.get_running_loop()
        # Behind balancers, implicit TLS starts after the PROXY header: each connection's gate does it.
        tls = self.ssl_context if self.implicit_tls and self.proxies is None else None
        self._remove_leftover_spool_files()
        backlog = min(self.limits.max_connections, 4096)
        handshake_timeout = self.limits.command_timeout if tls else None
        try:
            for sock in self.sockets:
                server = await loop.create_server(
                    lambda: _Connection(self),
                    sock=sock,
                    ssl=tls,
                    ssl_handshake_timeout=handshake_timeout,
                    backlog=backlog,
                )
                self._servers.append(server)
            for address in () if self.sockets else self.addresses:
                server = await loop.create_server(
                    lambda: _Connection(self),
                    address.host,
                    address.port,
                    ssl=tls,
                    ssl_handshake_timeout=handshake_timeout,
                    reuse_address=True,
                    backlog=backlog,
                )
                self._servers.append(server)
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        bound = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                bound.append(ListenAddress(str(host), int(port)))
        self._bound = tuple(bound)
        logger.info("SMTP listener %s accepting on %s", self.name, ", ".join(map(str, self._bound)))
        return self._bound

    async def stop(self, grace: float) -> None:
        """Stop accepting and drain: idle connections get 421 4.3.2 now, the rest after their transaction
        or after `grace` seconds, whichever comes first."""
        self._draining = True
        for server in self._servers:
            server.close()
        for gate in list(self._gates):
            gate.cancel()  # no session yet: nothing to say, nothing to finish
        if self._gates:
            await asyncio.wait(list(self._gates))
        for connection in list(self._connections):
            connection.drain()
        tasks = [connection.task for connection in self._connections if connection.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        logger.info("SMTP listener %s stopped", self.name)

    def _remove_leftover_spool_files(self) -> None:
        """Delete spool files left by a process of this node that is gone (a crash mid-message)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for path in self.spool_dir.glob(f"*{_SPOOL_SUFFIX}"):
            owner = path.name.partition("-")[0]
            if owner.isdigit() and int(owner) != os.getpid() and _process_alive(int(owner)):
                continue  # another worker of the node sharing the data directory is receiving it
            path.unlink(missing_ok=True)
            logger.info("SMTP %s: removed the leftover spool file %s", self.name, path)

    def new_spool_path(self) -> Path:
        return self.spool_dir / f"{os.getpid()}-{next(_spool_names)}{_SPOOL_SUFFIX}"

    @property
    def memory_spent(self) -> bool:
        """True when the node's sessions hold the budget's octets of messages: new ones wait."""
        return self.memory.spent

    def _admit(self, peer_ip: str, network: str) -> Reply | None:
        """The refusal for a new connection from `peer_ip` in `network`, or None to take it."""
        limits = self.limits
        if self._draining:
            return replies.SHUTTING_DOWN
        total = len(self._connections)
        if total >= limits.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip.get(peer_ip, 0) >= limits.max_connections_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        held = self._per_network.get(network, 0)
        if held >= limits.max_connections_per_prefix:
            return replies.TOO_MANY_CONNECTIONS_FROM_NETWORK
        # The last slots are kept for networks that hold few: a crowd from a few networks cannot take all.
        if total >= limits.max_connections - limits.reserved_connections and (
            held >= limits.busy_prefix_connections
        ):
            return replies.TOO_MANY_CONNECTIONS
        return None

    def _register(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._open.inc()
        self._per_ip[connection.peer_ip] = self._per_ip.get(connection.peer_ip, 0) + 1
        self._per_network[connection.network] = self._per_network.get(connection.network, 0) + 1

    def _unregister(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        self._open.dec()
        for counts, key in ((self._per_ip, connection.peer_ip), (self._per_network, connection.network)):
            left = counts.get(key, 1) - 1
            if left:
                counts[key] = left
            else:
                counts.pop(key, None)

    # --- PROXY protocol ----------------------------------------------------------------------------

    def _open_gate(self, transport: asyncio.Transport, origin: _Origin) -> None:
        """Serve a connection whose first octets are read off the socket before any transport reads
        them: a trusted balancer's PROXY header, or the screen before an implicit-TLS handshake."""
        proxies = self.proxies
        assert proxies is not None
        from_balancer = proxies.trusts(origin.client_ip)
        if self._draining or (from_balancer and len(self._awaiting_header) >= self.limits.max_connections):
            logger.info("SMTP %s: no slot for a connection from %s; closed", self.name, origin.describe())
            transport.abort()
            return
        try:
            sock = _take_socket(transport)
        except OSError as error:
            logger.info("SMTP %s: connection from %s lost at once: %r", self.name, origin.describe(), error)
            return
        gate = asyncio.get_running_loop().create_task(
            self._through_gate(sock, origin, proxies.header_timeout if from_balancer else None),
            name=f"smtp gate {origin.describe()}",
        )
        self._gates.add(gate)
        gate.add_done_callback(self._gates.discard)
        if from_balancer:
            self._awaiting_header.add(gate)
            gate.add_done_callback(self._awaiting_header.discard)

    async def _through_gate(self, sock: socket.socket, origin: _Origin, header_timeout: float | None) -> None:
        """Read the balancer's header (`header_timeout` given) or screen the first octets of a client
        (an implicit-TLS listener), then hand the socket to a `_Connection` (after the TLS handshake)."""
        loop = asyncio.get_running_loop()
        handed_over = False
        try:
            if header_timeout is not None:
                try:
                    async with asyncio.timeout(header_timeout):
                        header = await _read_header(loop, sock)
                except (ProxyHeaderError, TimeoutError, OSError) as error:
                    reason = "none in time" if isinstance(error, TimeoutError) else str(error) or repr(error)
                    logger.info(
                        "SMTP %s: PROXY header from the balancer %s refused (%s); closed",
                        self.name,
                        origin.client_ip,
                        reason,
                    )
                    return
                origin = origin.behind(header)
            else:
                try:
                    async with asyncio.timeout(self.limits.command_timeout):
                        first = await _peek(loop, sock, 12)
                except (TimeoutError, OSError):
                    return  # the client sent nothing (or left) before the TLS handshake
                if looks_like_header(first):
                    logger.info(
                        "SMTP %s: %s sent a PROXY header, not accepted from it", self.name, origin.describe()
                    )
                    with contextlib.suppress(OSError):
                        sock.send(replies.PROXY_NOT_ACCEPTED.to_bytes())
                    return
            tls = self.ssl_context if self.implicit_tls else None
            try:
                await loop.connect_accepted_socket(
                    lambda: _Connection(self, origin),
                    sock,
                    ssl=tls,
                    ssl_handshake_timeout=self.limits.command_timeout if tls else None,
                )
            except Exception as error:  # as the listener's own handshakes: logged, and the connection gone
                logger.info("SMTP %s: TLS handshake with %s failed: %r", self.name, origin.describe(), error)
            handed_over = True  # the transport owns the socket now (closed with it on failure)
        finally:
            if not handed_over:
                _close_quietly(sock)


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a connection comes from: the client (the socket's peer, or the one a trusted balancer's
    PROXY header named, then `proxy_ip` is the balancer) and the local end of the socket."""

    client_ip: str
    client_port: int
    local_ip: str
    local_port: int
    proxy_ip: str = ""

    def behind(self, header: ProxyHeader) -> _Origin:
        """The origin a balancer's header gives; LOCAL and UNKNOWN leave the socket's own peer."""
        if header.source is None:
            return self
        ip, port = header.source
        return _Origin(ip, port, self.local_ip, self.local_port, proxy_ip=self.client_ip)

    def describe(self) -> str:
        client = (
            f"[{self.client_ip}]:{self.client_port}"
            if ":" in self.client_ip
            else f"{self.client_ip}:{self.client_port}"
        )
        return f"{client} via {self.proxy_ip}" if self.proxy_ip else client


def _take_socket(transport: asyncio.Transport) -> socket.socket:
    """The transport's socket, as a new socket object of our own (a duplicate descriptor), with the
    transport aborted before it read anything: asyncio and uvloop start reading only after
    `connection_made` returns, and closing one descriptor of two leaves the connection open."""
    try:
        fileno = transport.get_extra_info("socket").fileno()
        sock = socket.socket(fileno=os.dup(fileno))
    finally:
        transport.abort()
    sock.setblocking(False)
    return sock


def _close_quietly(sock: socket.socket) -> None:
    """Close with a FIN, not a reset: what the peer sent and we did not read (a refused header, at most
    one read of it) is read first, since closing over unread input resets the connection, and the
    peer could lose the reply written just before."""
    with contextlib.suppress(OSError):
        sock.recv(MAX_HEADER_OCTETS)
    sock.close()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """The first octets waiting on the socket, left there; b"" when the peer closed."""
    while True:
        try:
            return sock.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, sock)


async def _read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyHeader:
    """Read a PROXY header off the socket, exactly: what follows it stays on the socket (the TLS
    handshake of an implicit-TLS listener cannot be handed what was read past it). Each round peeks at
    what is there, consumes all of it while the header is incomplete (it is all header), and only the
    header's own octets once it is complete. Raises ProxyHeaderError, or ConnectionError at EOF."""
    taken = b""
    while True:
        peeked = await _peek(loop, sock, MAX_HEADER_OCTETS - len(taken))
        if not peeked:
            raise ConnectionError("the connection closed before the header was complete")
        header = parse_header(taken + peeked)
        wanted = len(peeked) if header is None else header.length - len(taken)
        taken += sock.recv(wanted)  # peeked already: at least `wanted` octets are waiting
        if header is not None:
            return header


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Connection(asyncio.Protocol):
    """One client connection: the asyncio protocol callbacks and the task that serves the session."""

    def __init__(self, listener: SmtpListener, origin: _Origin | None = None) -> None:
        self._listener = listener
        self._origin = origin  # given when a PROXY header (or the screen before TLS) was read first
        self._limits = listener.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._core = SmtpServerProtocol(
            listener.hostname,
            listener.limits,
            tls_available=listener.ssl_context is not None and not listener.implicit_tls,
            tls_active=listener.implicit_tls,
            auth=listener.auth,
        )
        self._core.hidden_extensions = listener.hidden_extensions
        self.task: asyncio.Task[None] | None = None
        self.peer_ip = ""
        self.network = ""
        self._peer = ""
        self._waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._session_deadline = self._loop.time() + listener.limits.max_session_time
        self._idle_since = 0.0  # when the connection last started waiting after input came
        self._idle_mark = -1  # `_input_seen` at that moment
        self._rate_mark: tuple[float, int] | None = None  # (time, data octets) the data rate counts from
        self._data_since = 0.0  # when the current data phase began
        self._refusals_seen = 0
        self._auth_failures_seen = 0
        self._memory_counted = 0  # octets of this connection counted in the node's `MemoryBudget`
        self._spool: BinaryIO | None = None
        self._spool_path: Path | None = None
        self._spool_hash = hashlib.sha256()
        self._write_waiter: asyncio.Future[None] | None = None
        self._input_seen = 0  # counts arrivals, so the task knows whether input came while it was busy
        self._reading_paused = False
        self._tls = listener.implicit_tls
        self._upgrading: list[bytes] | None = None  # input that came through TLS before tls_started()
        self._lost = False
        self._draining = False
        self._screening = True  # until the first octets are seen (`looks_like_header`)
        self._proxy_refused = False

    # --- asyncio callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's are not subclasses of asyncio.Transport, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        listener = self._listener
        origin = self._origin
        if origin is None:
            peer = transport.get_extra_info("peername") or ("", 0)
            local = transport.get_extra_info("sockname") or ("", 0)
            origin = _Origin(str(peer[0]), int(peer[1]), str(local[0]), int(local[1]))
            proxies = listener.proxies
            if proxies is not None and (listener.implicit_tls or proxies.trusts(origin.client_ip)):
                # The header (or, on an implicit-TLS listener, the screen before the handshake) is read
                # off the socket itself; this transport is given up and a new one made after it.
                self._lost = True
                listener._open_gate(transport, origin)
                return
        self._transport = transport
        listener.accepted.inc()  # here, not before the gate: a balancer's connection counts once
        self.peer_ip = origin.client_ip
        self.network = network_of(self.peer_ip, self._limits)
        self._peer = origin.describe()
        refusal = listener._admit(self.peer_ip, self.network)
        if refusal is not None:
            logger.info("SMTP %s refused %s: %s", listener.name, self._peer, refusal)
            self._core.close_with(refusal)
            transport.write(self._core.data_to_send())
            transport.close()
            self._lost = True
            return
        info = ConnectionInfo(
            peer_ip=self.peer_ip,
            peer_port=origin.client_port,
            local_ip=origin.local_ip,
            local_port=origin.local_port,
            listener_name=listener.name,
            network=self.network,
            proxy_ip=origin.proxy_ip,
        )
        listener._register(self)
        self.task = self._loop.create_task(self._run(info), name=f"smtp {self._peer}")

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._upgrading.append(data)  # decrypted already: it reaches the core after tls_started()
            return
        if self._screening:
            # The first octets of the session: a PROXY header here is not taken (its peer is not a
            # trusted balancer, or the balancer's header was read already); what follows it is dropped.
            self._screening = False
            self._proxy_refused = looks_like_header(data)
        if self._proxy_refused:
            self._wake(True)
            return
        self._core.receive_data(data)
        self._input_seen += 1
        self._wake(True)
        if not self._reading_paused and self._core.buffered > _HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool:
        self._core.receive_data(b"")
        self._input_seen += 1
        self._wake(True)
        return not self._tls  # keep a plain socket half-open to answer what was pipelined before EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._input_seen += 1
        self._wake(True)
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    def pause_writing(self) -> None:
        if self._write_waiter is None or self._write_waiter.done():
            self._write_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        self._write_waiter = None

    # --- the connection's task ---------------------------------------------------------------------

    def drain(self) -> None:
        """The listener is stopping: close at the next moment this connection is between transactions."""
        self._draining = True
        self._wake(True)

    def _wake(self, value: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(value)

    async def _run(self, info: ConnectionInfo) -> None:
        session: SmtpSession | None = None
        try:
            session = self._listener.factory(info)
            await self._serve(session)
        except asyncio.CancelledError:
            self._finish_with(replies.SHUTTING_DOWN)
            raise
        except Exception:
            logger.exception("SMTP %s: connection from %s failed", self._listener.name, self._peer)
            self._finish_with(replies.LOCAL_ERROR_CLOSING)
        finally:
            if session is not None:
                try:
                    session.close()
                except Exception:
                    logger.exception("SMTP %s: session close failed for %s", self._listener.name, self._peer)
            if self._timer is not None:
                self._timer.cancel()
            if self._transport is not None:
                self._transport.close()
            self._discard_spool()
            self._count_memory(0)
            self._listener._unregister(self)

    async def _serve(self, session: SmtpSession) -> None:
        core = self._core
        refusal = await self._ask(session.connect(), "connect", replies.LOCAL_ERROR_CLOSING)
        if refusal is not None:
            core.close_with(refusal)
            await self._flush()
            return
        if self._tls:
            await self._ask(session.tls_started(self._tls_info()), "tls_started")
        self._send(core.greeting())
        listener = self._listener
        while not self._lost:
            if self._proxy_refused and not core.closed:
                logger.info(
                    "SMTP %s: %s sent a PROXY header, not accepted from it", listener.name, self._peer
                )
                core.close_with(replies.PROXY_NOT_ACCEPTED)
            seen = self._input_seen
            core.message_refusal = replies.INSUFFICIENT_STORAGE if listener.memory_spent else None
            event = core.next_event()
            if core.auth_failures != self._auth_failures_seen:
                self._auth_failures_seen = core.auth_failures
                logger.info(
                    "SMTP %s: failed AUTH from %s (%d in the session)",
                    listener.name,
                    self.peer_ip,
                    self._auth_failures_seen,
                )
            if core.refused_recipients != self._refusals_seen:
                self._refusals_seen = core.refused_recipients
                if self._refusals_seen > self._limits.refusal_slowdown and not core.closed:
                    await asyncio.sleep(self._limits.refusal_delay)  # recipient probing is slowed
            if event is None:
                if core.held >= (_SPOOL_WRITE if self._spool is not None else self._limits.spool_threshold):
                    await self._spool_parts(core.take_content())
                self._count_memory(core.held)
                await self._flush()
                if core.closed or self._lost:
                    return
                if self._reading_paused and core.buffered <= _HIGH_WATER and self._transport is not None:
                    self._transport.resume_reading()
                    self._reading_paused = False
                if self._input_seen != seen:
                    continue
                if self._draining and core.idle:
                    core.close_with(replies.SHUTTING_DOWN)
                elif (overdue := self._overdue()) is not None:
                    core.close_with(overdue)
                elif not await self._wait_for_input() and self._loop.time() >= self._idle_deadline():
                    core.close_with(replies.TIMEOUT)
            elif isinstance(event, HeloReceived):
                core.respond(await self._ask(session.helo(event.name, event.extended), "helo"))
            elif isinstance(event, AuthReceived):
                core.respond(await self._ask(session.authenticate(event.credentials), "authenticate"))
            elif isinstance(event, MailFromReceived):
                core.respond(await self._ask(session.mail_from(event.sender, event.params), "mail_from"))
            elif isinstance(event, RcptToReceived):
                core.respond(await self._ask(session.rcpt_to(event.recipient, event.params), "rcpt_to"))
            elif isinstance(event, MessageReceived):
                content = await self._message_content(event)
                self._count_memory(0 if content.spooled else content.size)  # until the session answers
                try:
                    core.respond(await self._ask(session.data(content), "data"))
                finally:
                    self._discard_spool()
                self._count_memory(core.held)
            elif isinstance(event, RecipientRefused):
                await self._ask(session.rcpt_refused(event.recipient, event.reply), "rcpt_refused")
            elif isinstance(event, MessageRefused):
                self._discard_spool()
                self._call(session.data_refused, event.reply)
            elif isinstance(event, TransactionReset):
                self._discard_spool()
                self._reset(session)
            elif isinstance(event, StartTlsRequested):
                if not await self._start_tls():
                    return
                self._reset(session)
                await self._ask(session.tls_started(self._tls_info()), "tls_started")
            # ConnectionClosing: the next round flushes and returns.

    async def _ask(self, call: Awaitable[_T], what: str, fallback: Reply = replies.LOCAL_ERROR) -> _T | Reply:
        """Await a session method; an exception is logged and becomes `fallback` for the client."""
        try:
            return await call
        except Exception:
            logger.exception("SMTP %s: session.%s failed for %s", self._listener.name, what, self._peer)
            return fallback

    def _reset(self, session: SmtpSession) -> None:
        self._call(session.reset)

    def _call(self, method: Callable[..., None], *args: object) -> None:
        """Call a synchronous session method; an exception is logged, never sent to the client."""
        try:
            method(*args)
        except Exception:
            name = getattr(method, "__name__", "method")
            logger.exception("SMTP %s: session.%s failed for %s", self._listener.name, name, self._peer)

    # --- memory and spooling -----------------------------------------------------------------------

    def _count_memory(self, held: int) -> None:
        """Set this connection's share of the node's `MemoryBudget` to `held` octets."""
        self._listener.memory.held += held - self._memory_counted
        self._memory_counted = held

    async def _spool_parts(self, parts: list[bytes]) -> None:
        """Append message content to the transaction's spool file (opened at its first part)."""
        if self._spool is None:
            self._spool_path = self._listener.new_spool_path()
            self._spool = await asyncio.to_thread(_create_spool_file, self._spool_path)
            self._spool_hash = hashlib.sha256()
        await asyncio.to_thread(_write_parts, self._spool, self._spool_hash, parts)

    async def _message_content(self, event: MessageReceived) -> MessageContent:
        if self._spool is None:
            return MessageContent(size=event.size, data=event.content)
        await self._spool_parts([event.content])
        spool, path, self._spool = self._spool, self._spool_path, None
        await asyncio.to_thread(spool.close)
        return MessageContent(size=event.size, path=path, sha256=self._spool_hash.hexdigest())

    def _discard_spool(self) -> None:
        """Close and delete the transaction's spool file, if any is left (refused, aborted, or done)."""
        spool, path, self._spool, self._spool_path = self._spool, self._spool_path, None, None
        if spool is not None:
            spool.close()
        if path is not None:
            path.unlink(missing_ok=True)

    # --- time --------------------------------------------------------------------------------------

    def _overdue(self) -> Reply | None:
        """The 421 for a session past `max_session_time`, or a data phase below `min_data_rate`."""
        now = self._loop.time()
        if now >= self._session_deadline:
            return replies.SESSION_TIME_EXCEEDED
        if not self._core.expecting_data:
            self._rate_mark = None
            return None
        octets = self._core.data_octets
        if self._rate_mark is None:
            self._rate_mark = (now, octets)
            self._data_since = now
            return None
        since, counted = self._rate_mark
        limits = self._limits
        if now - since >= limits.data_rate_window and now - self._data_since >= limits.data_rate_grace:
            if octets - counted < limits.min_data_rate * (now - since):
                return replies.DATA_RATE_TOO_LOW
            self._rate_mark = (now, octets)
        return None

    def _idle_deadline(self) -> float:
        timeout = self._limits.data_timeout if self._core.expecting_data else self._limits.command_timeout
        return self._idle_since + timeout

    def _next_check(self) -> float:
        """When `_overdue` must look again: the session deadline, or the next data rate check."""
        deadline = self._session_deadline
        if self._rate_mark is not None:
            limits = self._limits
            rate_check = max(
                self._rate_mark[0] + limits.data_rate_window, self._data_since + limits.data_rate_grace
            )
            deadline = min(deadline, rate_check)
        return deadline

    async def _wait_for_input(self) -> bool:
        """Wait for input (or a drain); False when a deadline (idle timeout, session time, data rate
        check) came first."""
        if self._idle_mark != self._input_seen:
            self._idle_mark = self._input_seen
            self._idle_since = self._loop.time()
        self._deadline = min(self._idle_deadline(), self._next_check())
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        """The one timer of the connection: it is re-armed lazily, not per wait (a heap push saved per
        command), so it may fire early for a deadline that has since moved on."""
        self._timer = None
        if self._waiter is None:
            return
        if self._loop.time() >= self._deadline:
            self._wake(False)
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def _send(self, data: bytes) -> None:
        if data and not self._lost and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _flush(self) -> None:
        self._send(self._core.data_to_send())
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            try:
                await asyncio.wait_for(waiter, self._limits.command_timeout)
            except TimeoutError:
                logger.info("SMTP %s: %s does not read its replies; dropped", self._listener.name, self._peer)
                self._lost = True
                if self._transport is not None:
                    self._transport.abort()

    def _finish_with(self, reply: Reply) -> None:
        """Say a last 421 if the connection is still open (used on shutdown and internal failure)."""
        if not self._core.closed:
            self._core.close_with(reply)
        self._send(self._core.data_to_send())

    async def _start_tls(self) -> bool:
        await self._flush()
        context = self._listener.ssl_context
        transport = self._transport
        if context is None or transport is None or self._lost:
            return False
        asking = self._listener.client_certificates
        if asking is not None:
            context = asking.context_for(self.peer_ip, context)
        # From the start_tls() call on, the protocol only sees decrypted input; everything before it
        # was plaintext and has been dropped by the core.
        self._upgrading = []
        try:
            upgraded = await self._loop.start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=self._limits.command_timeout
            )
        except Exception as error:
            logger.info("SMTP %s: TLS handshake with %s failed: %r", self._listener.name, self._peer, error)
            if asking is not None and context is asking.context:
                asking.failed(self.peer_ip, error)
            self._lost = True
            transport.abort()
            return False
        finally:
            early, self._upgrading = self._upgrading, None
        if upgraded is None:
            self._lost = True
            return False
        self._transport = upgraded
        self._tls = True
        self._reading_paused = False
        self._core.tls_started()
        for data in early:
            self._core.receive_data(data)
        return True

    def _tls_info(self) -> TlsInfo:
        ssl_object = self._transport.get_extra_info("ssl_object") if self._transport is not None else None
        if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            return TlsInfo(version="", cipher="")
        cipher = ssl_object.cipher()
        subject, sans = _certificate_names(ssl_object.getpeercert())
        return TlsInfo(
            version=ssl_object.version() or "",
            cipher=cipher[0] if cipher else "",
            peer_subject=subject,
            peer_sans=sans,
        )


def _create_spool_file(path: Path) -> BinaryIO:
    # Readable by the node only, like the blobs it becomes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    return os.fdopen(fd, "wb")


def _write_parts(spool: BinaryIO, digest: hashlib._Hash, parts: list[bytes]) -> None:
    for part in parts:
        spool.write(part)
        digest.update(part)


# The attribute names `getpeercert()` spells out, as RFC 4514 abbreviates them in a subject string.
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _rdn_value(value: object) -> str:
    """An attribute value escaped as RFC 4514 §2.4 asks (`\\`, `,`, `+`, `"`, `;`, `<`, `>`, `=`), so a
    value holding `,CN=other.example` cannot pass for another attribute of the subject."""
    return re.sub(r'([\\,+";<>=])', r"\\\1", str(value))


def _certificate_names(certificate: object) -> tuple[str | None, tuple[str, ...]]:
    """Subject (`CN=...,O=...`, values escaped as RFC 4514 does) and subjectAltNames (`DNS:name`) of a
    verified peer certificate (`getpeercert()` is empty when the client sent none).

    The dict from `getpeercert()` nests tuples of pairs; anything not of that shape is skipped.
    """
    if not isinstance(certificate, dict):
        return None, ()
    names: list[str] = []
    for rdn in certificate.get("subject", ()):
        names += [
            f"{_SHORT_NAMES.get(str(pair[0]), str(pair[0]))}={_rdn_value(pair[1])}"
            for pair in rdn
            if isinstance(pair, tuple) and len(pair) == 2
        ]
    sans = tuple(
        f"{pair[0]}:{pair[1]}"
        for pair in certificate.get("subjectAltName", ())
        if isinstance(pair, tuple) and len(pair) == 2
    )
    return ",".join(names) or None, sans
