"""Node settings: the frozen, typed form of `postroom.toml`.

Every limit the node enforces is named here, with its default, and only here: `Settings(source)` is
a node with every default, the loader falls back to these values, and the file `postroom init` writes
is rendered from them (`config_document`, written by `postroom.app.setup.render_config`).
`docs/configuration.md` documents each key. The loader (`postroom.config.loader`) builds these from
the file and reports every error at once; nothing else reads the file. Paths held here before loading
(the defaults) are relative to the config file's directory; the loader makes them absolute.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A `host:port` to listen on (IPv6 hosts in brackets: `[::1]:2525`)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Who the service is: its domain (tenants' default domains live under it), host name, and the names
    and addresses its customers' DNS records point at (`postroom domain records`, `service records`)."""

    domain: str = "postroom.test"
    hostname: str = "mx.postroom.test"
    mx_suffix: str = ""  # MX hosts are <domainKey>.<mx_suffix>; empty: mail.protection.<domain>
    spf_host: str = ""  # customers' SPF records include it; empty: spf.protection.<domain>
    addresses: tuple[str, ...] = ()  # the nodes' public IP addresses (MX A/AAAA, the SPF host's record)
    mta_sts_mode: str = "testing"  # the MTA-STS policy mode served for each domain: testing or enforce
    postmaster: str = ""  # where RCPT TO:<postmaster> goes (an address hosted here); "": postmaster@<domain>
    # SRS for forwarded mail: the domain of the rewritten senders ("": the service domain), the file
    # holding the secret key ("": srs.key in the data directory, created at first use), and how many
    # days a rewritten sender takes bounces.
    srs_domain: str = ""
    srs_secret_file: str = ""
    srs_max_age_days: int = 21

    @property
    def postmaster_address(self) -> str:
        return self.postmaster or f"postmaster@{self.domain}"

    @property
    def srs_host(self) -> str:
        return (self.srs_domain or self.domain).lower()

    @property
    def mx_host_suffix(self) -> str:
        return self.mx_suffix or f"mail.protection.{self.domain}"

    @property
    def spf_include(self) -> str:
        return self.spf_host or f"spf.protection.{self.domain}"

    def mx_host(self, domain_key: str) -> str:
        """The MX host name of the accepted domain whose domainKey is `domain_key`."""
        return f"{domain_key}.{self.mx_host_suffix}"


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    """Limits of one SMTP listener. Each has the standard reply named beside it in the protocol."""

    max_message_size: int = 36_700_160  # octets; SIZE advertises it; over it: 552 5.3.4
    max_recipients: int = 500  # per transaction; over it: 452 4.5.3
    max_command_line: int = 2048  # octets incl. CRLF (RFC 5321 minimum 512); over it: 500 5.5.2
    max_data_line: int = 8192  # octets incl. CRLF in the message; over it: 550 5.6.0 at end of data
    max_errors: int = 10  # error replies before 421 4.7.0 and disconnect
    max_refused_recipients: int = 20  # refused RCPTs per session, then 421 4.7.0 (smtpd_hard_error_limit)
    refusal_slowdown: int = 10  # refused RCPTs after which each refusal waits (smtpd_soft_error_limit)
    refusal_delay: float = 1.0  # seconds each refusal past `refusal_slowdown` waits (smtpd_error_sleep_time)
    max_junk_commands: int = 100  # NOOP, RSET, VRFY, EXPN, HELP per session, then 421 4.7.0
    command_timeout: float = 300.0  # seconds waiting for a command (RFC 5321: 5 minutes)
    data_timeout: float = 600.0  # seconds waiting for the next chunk of message data
    max_session_time: float = 1800.0  # seconds a connection may last in all, then 421 4.4.2
    min_data_rate: int = 1024  # octets/second a client must keep up in DATA/BDAT, else 421 4.4.2
    data_rate_window: float = 30.0  # seconds over which the data rate is measured
    data_rate_grace: float = 30.0  # seconds of a data phase before the rate is first checked
    max_connections: int = 1000  # total concurrent connections on the listener
    max_connections_per_ip: int = 50  # concurrent connections from one client address
    max_connections_per_prefix: int = 100  # concurrent connections from one client network
    ipv4_prefix: int = 24  # the network of an IPv4 client for the prefix limits (24 or 32)
    ipv6_prefix: int = 64  # the network of an IPv6 client for the prefix limits
    reserved_connections: int = 100  # the last slots: only for networks holding < busy_prefix_connections
    busy_prefix_connections: int = 10  # a network holding this many connections gets no reserved slot
    spool_threshold: int = 1_048_576  # octets of one message held in memory; past it, spooled to disk
    bare_lf: str = "reject"  # "reject": 550 5.6.11; "normalize": stored as CRLF (never ends DATA)
    nul: str = "reject"  # a NUL octet in a message: "reject" with 550 5.6.0, or "strip" it
    max_auth_line: int = (
        12288  # octets incl. CRLF of an AUTH command or SASL response (RFC 4954 §4); 500 5.5.6
    )
    max_auth_failures: int = 3  # failed AUTH replies per session, then 421 4.7.0 and disconnect


Network = IPv4Network | IPv6Network


def _loopback(port: int) -> tuple[ListenAddress, ...]:
    return (ListenAddress("127.0.0.1", port),)


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """One SMTP listener: where it listens and its limits.

    Behind TCP load balancers (`proxy_protocol`): a connection from an address in `trusted_proxies`
    (addresses and networks, normalized, e.g. "10.0.0.0/8", "127.0.0.1/32") must begin with a PROXY
    protocol header (v1 or v2) within `proxy_header_timeout` seconds, and the client it names is the
    connection's client; anyone else connects directly, and a header from them is refused."""

    listen: tuple[ListenAddress, ...]
    limits: SmtpLimits = field(default_factory=SmtpLimits)
    proxy_protocol: bool = False  # take PROXY headers from `trusted_proxies` (then it may not be empty)
    trusted_proxies: tuple[str, ...] = ()  # the balancers' addresses and networks
    proxy_header_timeout: float = 5.0  # seconds a balancer's header may take; then the connection closes


def _submission_limits() -> SmtpLimits:
    # The listener's own bounds are the ceilings an admin may give a mailbox (spec §8): 150 MB, 1000
    # recipients. Each mailbox's own limits (below, and in the directory) are checked by the session.
    return SmtpLimits(max_message_size=157_286_400, max_recipients=1000)


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    """The submission endpoint (`[submission]`): SMTP AUTH clients sending mail (spec §5, §10.5, §13).

    `listen` is the port 587 role (STARTTLS, AUTH only after it), `tls_listen` the port 465 role
    (implicit TLS). The sending limits are the defaults of every mailbox; the directory holds each
    tenant's and mailbox's own. Failed logins are counted per client IP and per account over
    `auth_failure_window`: past `auth_failures_before_throttle` every login gets 454 4.7.0 (the right
    password too), past `auth_failures_before_disconnect` 421 and the connection is closed."""

    listen: tuple[ListenAddress, ...] = _loopback(2587)
    tls_listen: tuple[ListenAddress, ...] = _loopback(2465)
    limits: SmtpLimits = field(default_factory=_submission_limits)
    # Behind TCP load balancers, for both listeners: as `ListenerSettings` (the header comes before TLS).
    proxy_protocol: bool = False
    trusted_proxies: tuple[str, ...] = ()
    proxy_header_timeout: float = 5.0
    max_send_size: int = 36_700_160  # octets a mailbox may send (35 MB); over it: 552 5.2.3
    max_recipients: int = 500  # recipients per message (a mailbox may have up to 1000); then 452 4.5.3
    messages_per_minute: int = 30  # messages one mailbox submits per minute; then 450 4.7.0
    recipients_per_day: int = 10_000  # recipients per UTC day; then 550 5.1.90 and restricted
    outbound_spam_per_day: int = 3  # messages refused as spam per UTC day; then restricted (spec §10.5)
    auth_failure_window: float = 300.0  # seconds over which failed logins are counted
    auth_failures_before_throttle: int = 5  # failed logins (per IP, per account); then 454 4.7.0
    auth_failures_before_disconnect: int = 10  # failed logins; then 421 4.7.0 and the connection closes
    auth_cache_seconds: float = 60.0  # a verified login is remembered this long (no Argon2 again)


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """The IMAP server (`[imap]`, docs/imap.md): mailbox owners reading their mail.

    `listen` is the port 143 role (STARTTLS; LOGIN and AUTHENTICATE only after it unless
    `allow_plaintext_login`, for a lab), `tls_listen` the port 993 role (implicit TLS). Failed logins
    are counted per client IP and per account as `[submission]` counts them (the same windows, a count
    of their own): past `auth_failures_before_throttle` every login gets `NO [UNAVAILABLE]` (the right
    password too), past `auth_failures_before_disconnect` `* BYE` and the connection is closed."""

    listen: tuple[ListenAddress, ...] = _loopback(2143)
    tls_listen: tuple[ListenAddress, ...] = _loopback(2993)
    allow_plaintext_login: bool = False  # LOGIN/AUTHENTICATE before TLS on `listen` (a lab only)
    max_connections: int = 2000  # concurrent connections on each listener, per node
    max_connections_per_ip: int = 50  # concurrent connections from one client address
    login_timeout: float = 60.0  # seconds a client may stay without logging in; then `* BYE`
    idle_timeout: float = 1800.0  # seconds an authenticated client may stay silent (RFC 3501: >= 30 min)
    idle_max: float = 1800.0  # seconds one IDLE command may last; then `* BYE` (clients re-IDLE sooner)
    max_errors: int = 20  # BAD replies in one session; then `* BYE` and the connection is closed
    commands_before_login: int = 20  # commands a client may send before it logs in; then `* BYE`
    max_append_size: int = 52_428_800  # APPENDLIMIT: octets of one appended message; over it NO [TOOBIG]
    poll_seconds: float = 10.0  # a selected folder is checked this often even without a notification
    auth_failure_window: float = 300.0  # seconds over which failed logins are counted
    auth_failures_before_throttle: int = 5  # failed logins (per IP, per account); then NO [UNAVAILABLE]
    auth_failures_before_disconnect: int = 10  # failed logins; then `* BYE` and the connection closes
    auth_cache_seconds: float = 60.0  # a verified login is remembered this long (no Argon2 again)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The certificate and key the listeners offer (STARTTLS, implicit TLS, IMAPS)."""

    certificate: Path = Path("tls/cert.pem")
    key: Path = Path("tls/key.pem")
    # Client certificates (inbound connectors identified by certificate, spec §3.4): the MX listener
    # asks every client for one after STARTTLS and verifies it against these CAs (PEM; "": the
    # system's CAs); a verified certificate's names attribute the connection to a connector. A client
    # that sends none is served as before.
    request_client_certificate: bool = True
    client_ca_file: str = ""


@dataclass(frozen=True, slots=True)
class AdminLimits:
    """Bounds of the admin HTTP listener on its clients (`[admin.limits]`).

    A connection must deliver each request head within `header_timeout` seconds (counted from the
    connection, or from the end of the previous response) and is closed after `keep_alive_timeout` idle
    seconds between requests; one client address holds at most `max_connections_per_ip` connections
    (more are closed at once), all clients together `max_connections` (then `503`)."""

    header_timeout: float = 10.0  # seconds for a request head to arrive complete; then closed
    keep_alive_timeout: float = 5.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 1000  # concurrent connections on the listener; then 503
    max_connections_per_ip: int = 32  # concurrent connections from one client address; more are closed


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin HTTP listener: where it listens, whether it speaks TLS itself, and its bounds."""

    listen: tuple[ListenAddress, ...] = _loopback(8080)
    tls: bool = False  # serve HTTPS with [tls]; False: HTTP behind a reverse proxy that holds TLS
    limits: AdminLimits = field(default_factory=AdminLimits)
    # Client networks that may read /readyz and /metrics (the node's insides); everyone else gets 403.
    metrics_allow: tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """`[clients]`: the servers a mail client is told to use when it sets itself up from an address
    (Thunderbird autoconfig, Outlook Autodiscover; `admin.clients`). These are the names and ports
    clients reach, which behind a load balancer are not the listeners' own (`[imap]`, `[submission]`
    listen on loopback or high ports; the balancer's public ports are the standard ones). An empty
    host is `[service] hostname`; a port of 0 is not offered (at least one of each pair must be)."""

    imap_host: str = ""  # the IMAP server's public name; "": [service] hostname
    imaps_port: int = 993  # IMAP over implicit TLS (the 993 role), offered first
    imap_port: int = 143  # IMAP with STARTTLS (the 143 role)
    submission_host: str = ""  # the submission server's public name; "": [service] hostname
    submissions_port: int = 465  # submission over implicit TLS (the 465 role), offered first
    submission_port: int = 587  # submission with STARTTLS (the 587 role)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Where records live: empty `url` means SQLite in the data directory."""

    url: str = ""


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver: `nameservers` as host:port (empty: the system's), timeout in seconds."""

    nameservers: tuple[ListenAddress, ...] = ()
    timeout: float = 5.0
    cache_size: int = 10_000


# Seconds before each retry of a recipient that failed temporarily: the n-th retry waits the n-th
# value, and the last repeats until the message expires. Exchange's model (spec §12.3) retries after
# 5 minutes a few times, then less often; this grows from 5 minutes to an hour (about 48 attempts
# over the 2 days of `message_expiration`).
DEFAULT_RETRY_SCHEDULE = (300.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Spool and scheduler: group commit window, delivery concurrency, retry and expiry."""

    commit_batch_max: int = 256  # commits served by one durable write at most
    delivery_batch_max: int = 256  # recipients one lease takes at most
    max_deliveries_in_flight: int = 1000  # recipients a node holds leased and not yet settled, at most
    lease_seconds: float = 300.0  # a leased recipient comes back after this if its worker died
    retry_schedule: tuple[float, ...] = (
        DEFAULT_RETRY_SCHEDULE  # seconds before retry 1, 2, ...; the last repeats
    )
    message_expiration: float = 172_800.0  # 2 days, then 4.4.7 and a DSN
    delay_notification: float = 14_400.0  # 4 hours still deferred after receipt: one "delayed" DSN


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The outbound SMTP client (`delivery.remote`): timeouts, concurrency, and where it connects.

    Timeouts follow RFC 5321 §4.5.3.2 (5 min per command, 10 min for the end of data)."""

    connect_timeout: float = 30.0  # seconds for the TCP connection and TLS handshake
    command_timeout: float = 300.0  # seconds for the greeting and each command's reply
    data_timeout: float = 600.0  # seconds for the message transfer and the reply to its end
    max_connections_per_destination: int = 20  # concurrent connections to one recipient domain
    max_messages_per_connection: int = 100  # messages sent over one connection before it is closed
    connection_cache_seconds: float = 2.0  # an idle connection waits this long for the next batch; 0: off
    max_mail_hosts: int = 5  # MX hosts tried per delivery, in preference order
    max_host_addresses: int = 4  # addresses of one MX host tried (A and AAAA)
    smtp_port: int = 25  # the port remote servers are reached on (labs and tests set another)
    tls_ca_file: str = ""  # extra CA certificates trusted for verified TLS (labs, tests); "": none
    helo_name: str = ""  # the name said in EHLO; "": [service] hostname


@dataclass(frozen=True, slots=True)
class PasswordSettings:
    """The policy a mailbox password must meet when it is set (`directory.PasswordPolicy`)."""

    min_length: int = 8  # the NIST SP 800-63B floor for a memorized secret
    max_length: int = 256  # every input is bounded; Argon2 hashes all of it


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Categorizing: how far one message may fan out, and how large a message a mailbox receives."""

    max_expanded_recipients: int = 10_000  # final recipients of one message after group expansion
    # Octets a mailbox receives unless its tenant or itself says otherwise (36 MB); a larger message
    # fails for that mailbox with 552 5.2.3 (at RCPT when MAIL said SIZE=, else by a bounce).
    max_receive_size: int = 37_748_736
    max_hops: int = 30  # Received headers a message may carry; more: a loop, 554 5.4.14 (spec: 20+)


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """Message trace: how long it is kept, and how much refused mail from one client it records."""

    retention_days: int = 90  # rows older than this are purged (Exchange Online keeps 90 days)
    purge_interval: float = 3600.0  # seconds between the node's purges
    purge_batch: int = 500  # messages deleted per transaction, so a purge never holds the writer long
    refusals_per_session: int = 20  # refused recipients of one connection traced one by one
    refusals_per_client: int = 100  # ... of one client network (/24, /64) per window; the rest aggregated
    refusal_window: float = 3600.0  # seconds; each client's aggregate is written once per window


@dataclass(frozen=True, slots=True)
class MtaStsSettings:
    """`[mta_sts]`: how outbound delivery fetches and caches the MTA-STS policies of destinations
    (RFC 8461). The port and scheme are for labs whose policy host is not on 443 or has no certificate."""

    policy_port: int = 443  # the port of https://mta-sts.<domain>/ (labs: the port their policy host uses)
    policy_https: bool = True  # False: fetch over plain HTTP (a lab without TLS; never in production)
    ca_file: str = ""  # PEM CA certificates trusted for policy hosts besides the system's ("": none)
    fetch_timeout: float = 10.0  # seconds a policy fetch may take in all (DNS, connect, TLS, body)
    fetch_retry: float = 300.0  # seconds before a failed fetch for a domain is tried again
    cache_size: int = 10_000  # destination domains whose policy is kept


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """[protection]: the filtering stack on every message (`postroom.protection`, spec §10).

    Service-wide values; what a tenant chooses (policies, its own IP lists) is directory data."""

    enabled: bool = True  # False: no filtering at all (a lab; never a node that faces the internet)
    authserv_id: str = ""  # the Authentication-Results authserv-id; "": [service] hostname
    spam_engine: str = "builtin"  # "builtin" (the embedded default) or "rspamd"
    rspamd_url: str = "http://127.0.0.1:11333"  # Rspamd's normal worker (/checkv2)
    rspamd_controller_url: str = "http://127.0.0.1:11334"  # Rspamd's controller (learn_spam/learn_ham)
    rspamd_password: str = ""  # the controller's password, if it has one
    malware_engine: str = "builtin"  # "builtin" or "clamd"
    clamd_socket: str = "/run/clamav/clamd.ctl"  # a Unix socket path, or host:port for clamd's TCP socket
    # clamd's StreamMaxLength (its default, 25 MiB): a larger message is scanned part by part; keep equal
    clamd_max_stream: int = 26_214_400
    engine_timeout: float = 30.0  # seconds one scan may take; then the engine counts as unavailable
    # An engine that is down or timed out: "defer" (451 4.7.x, the sender retries) or "deliver" (with
    # a header that says the message was not scanned). Never silently through, never lost.
    engine_unavailable: str = "defer"
    ip_allow: tuple[str, ...] = ()  # service-wide IP Allow list (addresses, a-b ranges, CIDR)
    ip_block: tuple[str, ...] = ()  # service-wide IP Block list; refused at connect (allow beats block)
    # DNS blocklists: "zone" (any 127.0.0.0/8 answer lists, but 127.255.255.x: the lists' error
    # answers) or "zone=127.0.0.2,127.0.0.4-127.0.0.7"
    dnsbl: tuple[str, ...] = ()
    connections_per_minute: int = 600  # new connections from one client IP per minute; then 421 4.7.0
    messages_per_minute: int = 1200  # messages from one client IP per minute; then 421 4.7.0
    rate_limited_clients: int = 100_000  # client IPs (IPv6: /64s) whose minute is counted, per process
    max_mime_depth: int = 20  # MIME nesting the parser descends
    max_mime_parts: int = 500  # leaf parts the parser collects
    max_archive_depth: int = 3  # archives inside archives the attachment filter opens
    max_archive_members: int = 1000  # members of one archive it lists
    max_archive_octets: int = 104_857_600  # uncompressed octets it reads from archives of one message
    quarantine_purge_interval: float = 3600.0  # seconds between purges of expired quarantined messages


@dataclass(frozen=True, slots=True)
class Settings:
    """All of a node's settings, as read from one file."""

    source: Path  # the config file these came from
    data_dir: Path = Path(".")  # [node] data_dir
    service: ServiceSettings = field(default_factory=ServiceSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    mx: ListenerSettings = field(default_factory=lambda: ListenerSettings(_loopback(2525)))
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)  # [imap]
    admin: AdminSettings = field(default_factory=AdminSettings)
    clients: ClientSettings = field(default_factory=ClientSettings)  # [clients]
    queue: QueueSettings = field(default_factory=QueueSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)  # [delivery]
    passwords: PasswordSettings = field(default_factory=PasswordSettings)  # [passwords]
    routing: RoutingSettings = field(default_factory=RoutingSettings)  # [routing]
    trace: TraceSettings = field(default_factory=TraceSettings)  # [trace]
    mta_sts: MtaStsSettings = field(default_factory=MtaStsSettings)  # [mta_sts]
    protection: ProtectionSettings = field(default_factory=ProtectionSettings)  # [protection]
    log_level: str = "info"  # [node] log_level: debug, info, warning or error
    drain_seconds: float = 30.0  # [node] drain_seconds: at stop, how long transactions in flight may take
    # [node] memory_budget: octets of messages held in memory by all the node's SMTP sessions (every
    # listener); while reached, DATA and BDAT get 452 4.3.1.
    memory_budget: int = 268_435_456
    # [node] workers: worker processes that all serve every listener (0: one per core of the machine)
    workers: int = 0
    # [node] name: how `postroom node list` names this node (empty: the machine's host name)
    name: str = ""
    # [node] blob_dir: the blob store's directory (None: <data_dir>/blobs); nodes that share one
    # database must share their blobs (a directory every node mounts, or the database's blob store)
    blob_root: Path | None = None
    # [node] heartbeat_seconds: how often each serving process writes its row of the node registry;
    # `postroom node list` shows a process as gone after three intervals without one
    heartbeat_seconds: float = 5.0
    # [node] blob_store: "files" (content-addressed files under blob_dir) or "database" (chunked rows in
    # the database: for nodes that share PostgreSQL and no file system)
    blob_store: str = "files"
    # [node] blob_inline_limit: a message body of at most this many octets is written in the same
    # durable commit as its spool rows (as rows in the database), not as a blob of its own; 0: never
    blob_inline_limit: int = 65_536

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'postroom.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.blob_root if self.blob_root is not None else self.data_dir / "blobs"

    @property
    def worker_count(self) -> int:
        """How many worker processes `serve` runs: `[node] workers`, or one per core when it is 0."""
        return self.workers or os.cpu_count() or 1

    @property
    def node_name(self) -> str:
        """`[node] name`, else the machine's host name."""
        return self.name or socket.gethostname()

    @property
    def srs_secret_path(self) -> Path:
        """The SRS key file: `[service] srs_secret_file`, else srs.key in the data directory."""
        return (
            Path(self.service.srs_secret_file) if self.service.srs_secret_file else self.data_dir / "srs.key"
        )

    @property
    def spool_dir(self) -> Path:
        """Where the SMTP listeners spool messages over `spool_threshold` while receiving them."""
        return self.data_dir / "incoming"
