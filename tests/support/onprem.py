"""Scenario labs: real Postfix instances as an organization's on-premises server, a third-party filtering
service and the internet, around a Postroom node, on one loopback block 127.0.<b>.0/24 of their own.

Every row of spec §4 but the first routes mail through servers that are not Postroom. Here each of those
is Postfix from the distribution (`ScenarioPostfix`, a tests/support/postfix.py `PostfixLab`: a private
instance, Debian's stock main.cf and master.cf, with the changes `role_main_cf` names and nothing else),
each listening on port 25 of an address of its own, so that every hop sees the real address of the one
before it and a scenario's connectors and SPF records can name it (`LabNet`):

| host      | what                                                                                   |
|-----------|----------------------------------------------------------------------------------------|
| .10       | Postroom's MX listener, port 25 (`[service] addresses` names it: the node knows itself) |
| .25       | the internet: catch-all Maildirs for the internet's domains, their MX by DNS            |
| .53       | the lab DNS server (tests/support/dns_server.py), port 53, serving the root zone too    |
| .2 .3 .5… | on-premises servers, one per organization                                               |
| .4        | the third-party filtering service                                                       |
| .50       | an internet MTA: tests bind their SMTP client to it (the sender domains' SPF names it)  |
| .60 .61   | devices (a multifunction printer, an application)                                       |
| .66       | an attacker: an address no connector and no SPF record names                            |

Enhanced filtering (spec §3.7) skips hops from non-public addresses as the gateway's own network, so
an original internet sender on 127/8 is never found behind a gateway: `public_client()` gives the
machine's own address outside 127/8 and the private ranges (connections from it to the block stay on
`lo`) for the tests that need it, or None (they then skip, saying why).

Why not 127.0.0.1: Postfix refuses a next hop at one of its own interface addresses ("mail for X loops
back to myself"), and 127.0.0.1 is its `inet_interfaces`; the other 127/8 addresses are only routed to
`lo`, so smtpd binds to them in master.cf and smtp(8) binds its client side to them
(`smtp_bind_address`). Why port 25: Postroom reaches the internet by MX on one port (`[delivery]
smtp_port`) and an on-premises host named by a connector or by `scenario apply --on-premises-host`
carries no port; on addresses of their own every server takes 25. Why port 53: Postfix's resolver reads
resolv.conf, which cannot name a port (its chroot's copy names the lab DNS server; bench/outbound_relay.py
does the same). Each test module takes its own block (`LabNet(41)`, `LabNet(42)`, ...), so modules run in
parallel under `pytest -n` with `--dist loadscope`.

Roles:

- **On-premises server** (`on_premises`): the organization's own mail server. It hosts the on-premises
  mailboxes of its domain (virtual(8), one Maildir per address, read by `messages`) and sends everything
  else to Postroom as its smart host (`relayhost = [<.10>]:25`): the internet, and the addresses of its
  domain it does not host (the cloud mailboxes, unknown ones). The domain is a `relay_domains` entry and
  each on-premises mailbox a `transport_maps` entry `address virtual:`. That is the closest Postfix has
  to an Exchange hybrid: Exchange routes a cloud user by the target address of its remote mailbox
  (`user@tenant.mail.onmicrosoft.com`) to the cloud; Postfix has no per-user target address short of
  listing every cloud user, so it sends every address of the domain it does not host to the cloud, as an
  Exchange organization does for an internal-relay (shared address space) domain. Mail for an unknown
  address so goes to Postroom, and Postroom's loop guard is what answers it. Its certificate, issued by
  the lab CA to `mail.<domain>` (so a connector's `*.<domain>` matches), is its STARTTLS server
  certificate (an outbound connector's domain validation against `mail.<domain>` verifies) and its TLS
  client certificate (`smtp_tls_cert_file`, sent when Postroom asks for one); `client_tls="encrypt"`
  makes TLS to its smart host mandatory, as a certificate-based connector wants. An address in `bounces`
  is accepted and then bounced (routed to virtual(8), which has no Maildir for it: `5.1.1 unknown user`):
  an on-premises NDR on demand (smtpd would refuse an `error:` transport's address at RCPT).
- **Third-party filtering service** (`third_party`): the MX of its customers' domains; relays everything
  for them to Postroom (`relay_domains` + `transport_maps` to `[<.10>]:25`), adding its Received header
  with the original sender's address, as a filtering service does.
- **The internet** (`internet`): one catch-all Maildir per internet domain (`virtual_mailbox_domains`,
  `@domain` maps), which Postroom finds by MX through the lab DNS server.

Every lab resolves through the lab DNS server (its chroot's resolv.conf), names itself `hostname` in HELO
and Received (`myhostname`), says in its Received header whether the hop was TLS
(`smtpd_tls_received_header`), and retries deferred mail after seconds, not minutes
(`minimal_backoff_time`, `maximal_backoff_time`, `queue_run_delay`): a lab waits on the test, never the
other way round. `started(*labs, meanwhile=...)` starts several at once (a second or two each) while
the node is configured; `halt`/`resume` stop and restart one with its queue and Maildirs (an outage).

`LabCa` issues certificates with `cryptography` (a CA, and leaf certificates for server and client use).
`scenario_node` makes a Postroom node for a block: its MX on .10:25, the lab DNS server as its resolver,
the lab CA trusted for client certificates (`[tls] client_ca_file`) and for outbound connectors' TLS
(`[delivery] tls_ca_file`), the filtering stack on; `publish_service` serves the service's zone (its
per-domain MX hosts, its SPF host) and `publish` a customer's or the internet's domain, as a DNS
provider would (`applied_records` reads what `scenario apply --json` says to publish). `exchange` is an
SMTP client that keeps every reply, for tests that assert what a sender was told; `inbox`, `traced`
and `events` read a Postroom mailbox and message trace.

Needs root (Postfix's master; ports 25 and 53). Fails with RuntimeError (and leaves nothing running)
when Postfix will not start, like `PostfixLab`.

*Security:* test code only; everything listens on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postroom.app import App
from postroom.app.domain_dns import domain_facts
from postroom.app.setup import render_config
from postroom.config import ListenAddress, Settings
from postroom.dns import domain_records
from postroom.model.scope import OPERATOR
from postroom.protection.enhanced import is_public
from postroom.trace import StoredTraceEvent, TraceQuery, TraceRow
from tests.support.dns_server import DnsTestServer
from tests.support.node import make_node, reload
from tests.support.postfix import DEBIAN_MAIN_CF, PostfixLab, lab_main_cf

PORT = 25  # every server of a block listens here, on its own address
DNS_PORT = 53  # resolv.conf cannot name another
POSTROOM, INTERNET, DNS, THIRD_PARTY = 10, 25, 53, 4
INTERNET_CLIENT, ATTACKER, DEVICE, APPLICATION = 50, 66, 60, 61
CATCH_ALL = "_catch_all"  # the Maildir of a catch-all domain
T = TypeVar("T")
WAIT_SECONDS = 30.0  # for mail to arrive somewhere; Postfix's first delivery attempt is immediate


# --------------------------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class LabNet:
    """One module's loopback block, 127.0.<block>.0/24, and who sits where in it."""

    block: int

    def __post_init__(self) -> None:
        if not 1 <= self.block <= 254:
            raise ValueError(f"block {self.block}: use 1..254 (127.0.<block>.0/24)")

    def at(self, host: int) -> str:
        return f"127.0.{self.block}.{host}"

    @property
    def postroom(self) -> str:
        return self.at(POSTROOM)

    @property
    def internet(self) -> str:
        return self.at(INTERNET)

    @property
    def dns(self) -> str:
        return self.at(DNS)

    @property
    def third_party(self) -> str:
        return self.at(THIRD_PARTY)

    @property
    def internet_client(self) -> str:
        return self.at(INTERNET_CLIENT)

    @property
    def attacker(self) -> str:
        return self.at(ATTACKER)

    @property
    def device(self) -> str:
        return self.at(DEVICE)

    @property
    def application(self) -> str:
        return self.at(APPLICATION)

    @property
    def smart_host(self) -> str:
        """Postroom as a Postfix next hop: no MX lookup, port 25."""
        return f"[{self.postroom}]:{PORT}"


# --------------------------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class CertificatePair:
    certificate: Path  # PEM: the leaf, then the CA (a client sends the chain it has)
    key: Path  # PEM, PKCS#8, mode 0600
    names: tuple[str, ...]


class LabCa:
    """A test certificate authority in `directory`: `ca_file` is what a verifier trusts; `issue` makes
    a leaf certificate for server and client use (EKU serverAuth and clientAuth), `names[0]` its CN and
    every name a DNS SAN."""

    def __init__(self, directory: Path, name: str = "Postroom Scenario Lab CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        public = self._key.public_key()
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, *names: str, ip: str | None = None) -> CertificatePair:
        if not names:
            raise ValueError("a certificate needs at least one name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        if ip is not None:
            alternative.append(x509.IPAddress(ipaddress.ip_address(ip)))
        ca_key_id = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = self.directory / names[0].replace("*", "_wildcard")
        pair = CertificatePair(Path(f"{stem}.pem"), Path(f"{stem}.key"), names)
        pair.certificate.write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
            + self._certificate.public_bytes(serialization.Encoding.PEM)
        )
        fd = os.open(pair.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return pair

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


# --------------------------------------------------------------------------------------------- Postfix


@dataclass
class ScenarioPostfix(PostfixLab):
    """A PostfixLab in a scenario role (see the module docstring); the role's settings are fields."""

    hostname: str = "mail.lab.test"  # myhostname: HELO and Received
    nameserver: str = ""  # the lab DNS server (port 53), written into the chroot's resolv.conf
    smart_host: str = ""  # relayhost: where everything not delivered here or routed by transports goes
    relay_domains: tuple[str, ...] = ()  # accepted from anyone, sent on (unless a mailbox is here)
    mailboxes: tuple[str, ...] = ()  # addresses delivered into a Maildir here (in relay_domains)
    catch_all: tuple[str, ...] = ()  # domains whose every address is delivered here (one Maildir each)
    transports: Mapping[str, str] = field(default_factory=dict)  # transport_maps: key -> transport:nexthop
    bounces: tuple[str, ...] = ()  # addresses accepted, then bounced by virtual(8): "unknown user"
    certificate: CertificatePair | None = None  # STARTTLS server certificate and TLS client certificate
    client_tls: str = "may"  # smtp_tls_security_level toward the next hop: may or encrypt
    in_flow_delay: str | None = "0s"

    def setup(self) -> None:
        if not self.nameserver:
            raise ValueError("a scenario lab resolves through the lab DNS server: give nameserver")
        super().setup()
        owner = self.maildir.stat()  # PostfixLab made its Maildirs for `nobody`; so are these
        etc = self.config_dir
        (etc / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in role_main_cf(self, owner.st_uid, owner.st_gid).items())
        )
        mailboxes = [(address, self._maildir_path(address)) for address in self.mailboxes]
        mailboxes += [
            (f"@{domain}", self._maildir_path(f"{CATCH_ALL}@{domain}")) for domain in self.catch_all
        ]
        (etc / "vmailbox").write_text(
            "".join(f"{key} {path.relative_to(self.base / 'mail')}/\n" for key, path in mailboxes)
        )
        transports = {address: "virtual:" for address in self.mailboxes}
        transports |= {address: "virtual:" for address in self.bounces}  # with no Maildir: 5.1.1
        transports |= dict(self.transports)
        (etc / "transport").write_text("".join(f"{key} {value}\n" for key, value in transports.items()))
        for _key, path in mailboxes:
            for directory in (path.parent, path, path / "tmp", path / "new", path / "cur"):
                directory.mkdir(mode=0o700, exist_ok=True)
                os.chown(directory, owner.st_uid, owner.st_gid)

    def _chroot(self) -> None:
        super()._chroot()
        # smtpd and smtp(8) run chrooted (Debian's master.cf) and read the chroot's resolv.conf.
        (self.base / "queue" / "etc" / "resolv.conf").write_text(f"nameserver {self.nameserver}\n")

    def _maildir_path(self, address: str) -> Path:
        local, _, domain = address.lower().rpartition("@")
        if not local or not domain or "/" in address or address.startswith("."):
            raise ValueError(f"{address!r}: not a mailbox address for a lab")
        return self.base / "mail" / domain / local

    # -- what arrived

    def messages(self, address: str) -> list[bytes]:
        """Messages delivered to `address` (for a catch-all domain: to any address in it), oldest first,
        as virtual(8) wrote them (LF line ends, its Return-Path and Delivered-To on top)."""
        domain = address.lower().rpartition("@")[2]
        key = f"{CATCH_ALL}@{domain}" if domain in self.catch_all else address
        path = self._maildir_path(key)
        files = [p for sub in ("new", "cur") for p in (path / sub).iterdir()]
        return [p.read_bytes() for p in sorted(files, key=lambda p: (p.stat().st_mtime, p.name))]

    def wait_for(
        self, address: str, *, containing: str | bytes = b"", count: int = 1, timeout: float = WAIT_SECONDS
    ) -> list[bytes]:
        """The messages delivered to `address` that contain `containing` (a subject, say), once there
        are at least `count`; AssertionError with the lab's log when they do not arrive in time."""
        needle = containing.encode() if isinstance(containing, str) else containing
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(address) if needle in m]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.hostname}: {len(found)} message(s) for {address} containing {needle!r}, not "
                    f"{count}, after {timeout:g} s; queue {self.queue_size()}; log:\n{self.log_tail(30)}"
                )
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return (self.base / "log" / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    # -- an outage

    def halt(self) -> None:
        """Stop the instance, keeping its queue and Maildirs (`resume` starts it again)."""
        self._postfix("stop")
        deadline = time.monotonic() + 15.0
        while _accepts(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.hostname} still listens on {self.host}:{self.port}")
            time.sleep(0.1)

    def resume(self, timeout: float = 30.0) -> None:
        result = self._postfix("start")
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stderr.strip() or self.log_tail()}")
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.hostname} did not listen again on {self.host}:{self.port}")
            time.sleep(0.1)

    def flush(self) -> None:
        """Attempt the deferred mail now (`postfix flush`)."""
        self._postfix("flush")


def role_main_cf(lab: ScenarioPostfix, uid: int, gid: int) -> dict[str, str]:
    """Debian's main.cf with the lab's changes (tests/support/postfix.py) and the role's, named here."""
    settings = dict(DEBIAN_MAIN_CF)
    settings.update(lab_main_cf(lab.base, uid, gid, lab.in_flow_delay, lab.domain))
    etc = lab.config_dir
    settings.update(
        {
            "myhostname": lab.hostname,
            "smtp_bind_address": lab.host,  # the next hop sees this lab's own address
            "virtual_mailbox_domains": " ".join(lab.catch_all),
            "transport_maps": f"texthash:{etc / 'transport'}",
            # A lab retries within seconds: the test waits for it, and nothing here is an internet MTA.
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            "queue_run_delay": "2s",
            "smtpd_tls_received_header": "yes",  # its Received header says whether the hop was TLS
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "1",
        }
    )
    if lab.smart_host:
        settings["relayhost"] = lab.smart_host
    if lab.relay_domains:
        settings["relay_domains"] = " ".join(lab.relay_domains)
    if lab.certificate is not None:
        cert, key = str(lab.certificate.certificate), str(lab.certificate.key)
        settings |= {
            "smtpd_tls_cert_file": cert,
            "smtpd_tls_key_file": key,
            "smtpd_tls_security_level": "may",
        }
        settings |= {"smtp_tls_cert_file": cert, "smtp_tls_key_file": key}
    settings["smtp_tls_security_level"] = lab.client_tls
    return settings


def on_premises(
    net: LabNet,
    host: int,
    domain: str,
    mailboxes: Sequence[str],
    ca: LabCa,
    *,
    client_tls: str = "encrypt",
    bounces: Sequence[str] = (),
) -> ScenarioPostfix:
    """An organization's on-premises server on 127.0.<b>.<host>: `mailboxes` (addresses in `domain`)
    hosted here, everything else to Postroom; certificate `mail.<domain>` from `ca`."""
    for address in mailboxes:
        if not address.lower().endswith(f"@{domain}"):
            raise ValueError(f"{address}: an on-premises mailbox of {domain} must be in {domain}")
    return ScenarioPostfix(
        port=PORT,
        host=net.at(host),
        domain=domain,
        hostname=f"mail.{domain}",
        nameserver=net.dns,
        smart_host=net.smart_host,
        relay_domains=(domain,),
        mailboxes=tuple(mailboxes),
        bounces=tuple(bounces),
        certificate=ca.issue(f"mail.{domain}"),
        client_tls=client_tls,
    )


def third_party(
    net: LabNet, domains: Sequence[str], *, certificate: CertificatePair | None = None
) -> ScenarioPostfix:
    """A third-party filtering service on 127.0.<b>.4, the MX of `domains`, relaying them to Postroom."""
    return ScenarioPostfix(
        port=PORT,
        host=net.third_party,
        domain=domains[0],
        hostname="filter.thirdparty.test",
        nameserver=net.dns,
        relay_domains=tuple(domains),
        transports={domain: f"smtp:{net.smart_host}" for domain in domains},
        certificate=certificate,
    )


def internet(net: LabNet, domains: Sequence[str]) -> ScenarioPostfix:
    """The internet on 127.0.<b>.25: a catch-all Maildir for each of `domains` (publish their MX)."""
    return ScenarioPostfix(
        port=PORT,
        host=net.internet,
        domain=domains[0],
        hostname="mx.internet.test",
        nameserver=net.dns,
        catch_all=tuple(domains),
    )


@contextlib.contextmanager
def started(*labs: PostfixLab, meanwhile: Callable[[], T] | None = None) -> Iterator[T | None]:
    """Start the labs at once (each takes a second or two), and stop them all at the end. `meanwhile`
    runs in this thread while they start (the node's configuration, say); what it returns is yielded.
    When a lab fails to start or `meanwhile` raises, every lab is stopped and the error raised."""
    with ThreadPoolExecutor(max(len(labs), 1)) as pool:
        starting = [pool.submit(_start, lab) for lab in labs]
        failure: BaseException | None = None
        value: T | None = None
        try:
            value = meanwhile() if meanwhile is not None else None
        except BaseException as error:  # raised below, once the labs are stopped
            failure = error
        outcomes = [future.result() for future in starting]
    try:
        for error in (failure, *outcomes):
            if error is not None:
                raise error
        yield value
    finally:
        with ThreadPoolExecutor(max(len(labs), 1)) as pool:
            list(pool.map(lambda lab: lab.stop(), labs))


def _start(lab: PostfixLab) -> BaseException | None:
    try:
        lab.start()
    except BaseException as error:  # reported by started(), after the others started
        return error
    return None


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- DNS


def lab_dns(net: LabNet) -> DnsTestServer:
    """The block's DNS server on .53:53, serving the root zone: a name in no zone is NXDOMAIN, as on
    the internet (a PTR lookup of a lab address is answered at once). Start it (a context manager)."""
    server = DnsTestServer({".": ""}, host=net.dns)
    server.port = DNS_PORT
    return server


def publish(
    dns: DnsTestServer,
    domain: str,
    *,
    mx: str | None = None,
    spf: str | None = None,
    hosts: Mapping[str, str] | None = None,
) -> None:
    """Serve `domain`: MX (a host name), its one SPF record, and A records (name relative to the domain
    or absolute with a final dot -> address). Replaces what was served for it."""
    lines = [f"@ MX 10 {mx}{'' if mx.endswith('.') else '.'}"] if mx else []
    if spf:
        lines.append(f'@ TXT "{spf}"')
    lines += [f"{name} A {address}" for name, address in (hosts or {}).items()]
    dns.set_zone(domain, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- Postroom


def scenario_node(directory: Path, net: LabNet, ca: LabCa, *, protection: bool = True) -> Settings:
    """A Postroom node for the block, its config file written to match (the CLI reads it too): MX on
    .10:25 and `[service] addresses` naming it; the lab DNS server; the lab CA trusted for client
    certificates and for outbound TLS; 5 s to connect; the filtering stack on unless told otherwise."""
    settings = make_node(directory, nameservers=(f"{net.dns}:{DNS_PORT}",), protection=protection)
    settings = dataclasses.replace(
        settings,
        service=dataclasses.replace(settings.service, addresses=(net.postroom,)),
        mx=dataclasses.replace(settings.mx, listen=(ListenAddress(net.postroom, PORT),)),
        tls=dataclasses.replace(
            settings.tls, request_client_certificate=True, client_ca_file=str(ca.ca_file)
        ),
        delivery=dataclasses.replace(
            settings.delivery, smtp_port=PORT, tls_ca_file=str(ca.ca_file), connect_timeout=5.0
        ),
    )
    settings.source.write_text(render_config(settings), encoding="utf-8")
    return reload(settings)


def publish_service(dns: DnsTestServer, settings: Settings, net: LabNet) -> None:
    """Serve the service's own zone as `postroom service records` would have it: every per-domain MX
    host (`<domainKey>.<mx suffix>`) and the node's host name at .10, and the SPF host listing .10 and
    127.0.0.1 (where the node's own deliveries come from: it does not bind its client side)."""
    service = settings.service
    origin = service.domain
    suffix = service.mx_host_suffix.removesuffix(f".{origin}")
    hostname = service.hostname.removesuffix(f".{origin}")
    spf = service.spf_include.removesuffix(f".{origin}")
    dns.set_zone(
        origin,
        f"*.{suffix} A {net.postroom}\n{hostname} A {net.postroom}\n"
        f'{spf} TXT "v=spf1 ip4:{net.postroom} ip4:127.0.0.1 -all"\n',
    )


def applied_records(applied: Mapping[str, object]) -> dict[str, dict[str, str]]:
    """What `postroom scenario apply --json` (or `Applied.as_json()`) says each domain must publish:
    domain -> {record type: value}, e.g. {"contoso.com": {"MX": "...", "TXT": "v=spf1 ... -all"}}."""
    published: dict[str, dict[str, str]] = {}
    for entry in applied["dns"]:  # type: ignore[attr-defined]
        records = {str(r["type"]): str(r["value"]) for r in entry["records"]}
        published[str(entry["domain"])] = records
    return published


def postroom_mx(app: App, domain: str) -> str:
    """The MX host `postroom domain records` gives `domain` (the service's per-domain host)."""
    records = domain_records(app.settings.service, domain_facts(app.directory, domain))
    return next(record.value for record in records if record.type == "MX")


def public_client() -> str | None:
    """A local IPv4 address outside 127/8 and the private and shared ranges, for an internet sender
    whose address enhanced filtering must find: it skips hops from non-public addresses as the
    gateway's own network (spec §3.7), so a loopback original sender would never be found. None when
    the machine has no such address (its tests then skip, saying so). Connections from it to the
    loopback labs stay on `lo`."""
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False)
    for match in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/", listed.stdout):
        address = ipaddress.ip_address(match.group(1))
        if is_public(address):
            return str(address)
    return None


def inbox(app: App, address: str, folder: str = "Inbox") -> list[bytes]:
    """A Postroom mailbox's messages in `folder`, oldest first, as exported (CRLF)."""
    d, store = app.directory, app.mailstore
    mailbox = d.get_recipient(OPERATOR, address).id
    return [
        store.export(OPERATOR, mailbox, m.uid, folder) for m in store.list_messages(OPERATOR, mailbox, folder)
    ]


def traced(app: App, recipient: str, subject: str) -> list[TraceRow]:
    """Message trace rows of the messages to `recipient` (as given or resolved) with `subject`."""
    return [
        row for row in app.trace.search(TraceQuery(recipient=recipient), OPERATOR) if row.subject == subject
    ]


def events(app: App, message_id: str) -> list[StoredTraceEvent]:
    detail = app.trace.detail(message_id, OPERATOR)
    return list(detail.events) if detail is not None else []


# --------------------------------------------------------------------------------------------- SMTP


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def enhanced(self) -> str:
        """The enhanced status code the text starts with ("5.7.64"), or ""."""
        first = self.text.split(" ", 1)[0]
        return first if first.count(".") == 2 and first[0] in "245" else ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a server said to one transaction: MAIL, each RCPT, DATA (None when not reached)."""

    mail: Reply
    rcpt: dict[str, Reply]
    data: Reply | None
    tls: bool

    @property
    def accepted(self) -> list[str]:
        return [address for address, reply in self.rcpt.items() if reply.code == 250]


def exchange(
    server: tuple[str, int] | str,
    sender: str,
    recipients: Sequence[str],
    message: bytes | None = None,
    *,
    source: str | None = None,
    helo: str = "mta.internet.test",
    starttls: bool = False,
    certificate: CertificatePair | None = None,
) -> Exchange:
    """One SMTP transaction as a client on `source` (an address of the block, or the kernel's choice),
    keeping every reply: MAIL, each RCPT, then DATA when a recipient was accepted and a message given.
    With `starttls` (or a `certificate`, the client certificate it presents) it starts TLS first, and
    does not check the server's certificate (as an MTA with opportunistic TLS)."""
    host, port = (server, PORT) if isinstance(server, str) else server
    with smtplib.SMTP(
        host, port, local_hostname=helo, timeout=30, source_address=(source, 0) if source else None
    ) as client:
        client.ehlo(helo)
        tls = False
        if starttls or certificate is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if certificate is not None:
                context.load_cert_chain(certificate.certificate, certificate.key)
            code, text = client.starttls(context=context)
            assert code == 220, (code, text)
            client.ehlo(helo)
            tls = True
        mail = Reply(*_decoded(client.mail(sender)))
        rcpt: dict[str, Reply] = {}
        if mail.code == 250:
            for recipient in recipients:
                rcpt[recipient] = Reply(*_decoded(client.rcpt(recipient)))
        data = None
        if message is not None and any(reply.code == 250 for reply in rcpt.values()):
            data = Reply(*_decoded(client.data(message)))
        return Exchange(mail, rcpt, data, tls)


def with_subject(messages: Sequence[bytes], subject: str) -> list[bytes]:
    """The messages whose Subject field is `subject` (CRLF or LF line ends, as stored)."""
    wanted = f"subject: {subject}".lower()
    return [m for m in messages if any(f"{k}: {v}".lower() == wanted for k, v in headers(m))]


def _decoded(reply: tuple[int, bytes]) -> tuple[int, str]:
    code, text = reply
    return code, text.decode(errors="replace").replace("\n", " ")


def message(
    sender: str, recipient: str, subject: str, *, body: str = "Hello.", message_id: str | None = None
) -> bytes:
    """A plain, well-formed message (CRLF) whose Message-ID is unique unless given."""
    domain = sender.rpartition("@")[2] or "lab.test"
    mid = message_id or f"{time.monotonic_ns()}.{os.getpid()}@{domain}"
    date = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    head = (
        f"From: <{sender or 'MAILER-DAEMON@' + domain}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
    )
    return (head + "\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


def headers(raw: bytes) -> list[tuple[str, str]]:
    """The header fields of a message as (name lower-case, unfolded value), top first."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode(errors="replace")
    fields: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return fields


def header_values(raw: bytes, name: str) -> list[str]:
    return [value for key, value in headers(raw) if key == name.lower()]
