"""The TLS policy of an outbound destination: MTA-STS (RFC 8461) and DANE (RFC 7672), known before connecting.

`outbound_tls_policy(resolver, destination, mx_hosts)` returns an `OutboundTlsPolicy` for one
destination domain and the MX hosts the remote agent is about to try:

- `mode`: `mta-sts-enforce` when the destination has an `enforce` MTA-STS policy (mail goes only over
  TLS with a certificate valid for the MX host, to an MX host the policy names: `allows`), `mta-sts-testing`
  when it has a `testing` one (the agent delivers as usual and reports what enforce would have refused),
  `opportunistic` otherwise (STARTTLS when offered, certificate not checked);
- `tlsa(mx_host)`: the DANE records of the host, only from a TLSA answer for `_25._tcp.<mx host>` that the
  resolver marked authenticated (AD), and only the usages RFC 7672 §3.1 lets SMTP use, DANE-TA(2) and
  DANE-EE(3). A host with such records must be reached over TLS and its chain must pass `verify_dane`
  (its certificate is judged by the TLSA records, not by the Web PKI; an enforce policy's `allows` still
  applies: RFC 8461 §2 lets neither mechanism override a failure of the other);
- `tls_required(mx_host)`: TLS is mandatory for the host (enforce, or authenticated TLSA records even when
  none is usable, RFC 7672 §2.2);
- `dane_unavailable(mx_host)`: why the TLSA lookup of the host failed ("" when it did not). RFC 7672 §2.2
  forbids falling back to plain delivery when the TLSA answer cannot be had (a failing validation is what
  an attack looks like), so the agent skips such a host and defers with `DANE_FAILED` when no host is left.

`verify_dane(peer_chain_der, records, mx_host)` checks a server's chain (leaf first, DER) against TLSA
records: DANE-EE(3) matches the leaf's certificate (selector 0) or public key (selector 1), hashed
SHA-256 (1), SHA-512 (2) or exact (0), with neither name nor validity dates checked (RFC 7672 §3.1.1);
DANE-TA(2) matches a certificate of the chain above the leaf that the leaf chains up to by signature,
every certificate up to it inside its validity period, and the leaf's DNS names (subjectAltName, else
the CN) must match the MX host, a wildcard standing for exactly one leftmost label (§3.2.2, §3.2.3).
A trust anchor published only as a key (2 1 x) but not sent in the chain is not supported: the server
must send it, as §3.1.2 says it should.

Failures to apply a policy are `TlsPolicyFailure`s: the reply (`TLS_POLICY_FAILED` 4.7.5 or `DANE_FAILED`
4.7.323) and `retry_for`, 24 hours (spec §12.3), which the queue reads through
`model.replies.retry_period(reply)` to expire such recipients after a day instead of two.

Not done here: DNSSEC validation (the resolver trusts AD from the configured nameserver, see
`dns.resolver`), the security of the MX lookup itself (RFC 7672 §2.2.1 applies DANE only when the MX
RRset is authenticated too; Postroom applies authenticated TLSA whenever it finds it, which is stricter
for the sender and never weaker), CNAME expansion of the TLSA base domain (§2.2.3), and TLS reporting.

*Security:* TLSA records and certificates come from the network. Certificates are parsed by
`cryptography` (a malformed one matches nothing); digests are compared whole. An unauthenticated TLSA
answer is ignored, so a forged one can neither add trust nor cause a refusal. MTA-STS is looked up
through `dns.mta_sts_cache` (a policy over an untrusted certificate is never used; an enforce policy
outlives a suppressed TXT record or a failed refetch until its max_age).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from postroom.config.settings import MtaStsSettings
from postroom.dns.mta_sts_cache import StsLookup, StsPolicyCache
from postroom.dns.resolver import DnsError, NxDomain, Resolver, TlsaRecord
from postroom.model.replies import DANE_FAILED, TLS_POLICY_FAILED, TLS_POLICY_RETRY_PERIOD, Reply

DANE_TA = 2
DANE_EE = 3
USABLE_USAGES = (DANE_TA, DANE_EE)  # RFC 7672 §3.1: PKIX-TA(0) and PKIX-EE(1) are not for SMTP
MAX_CHAIN = 10  # certificates of a peer chain looked at, at most


class TlsMode(StrEnum):
    OPPORTUNISTIC = "opportunistic"
    MTA_STS_ENFORCE = "mta-sts-enforce"
    MTA_STS_TESTING = "mta-sts-testing"


@dataclass(frozen=True, slots=True)
class TlsPolicyFailure:
    """Why a destination's TLS policy could not be met: the reply the recipients are deferred with, and
    how long they keep retrying (spec §12.3: 24 h for MTA-STS and DANE failures)."""

    reply: Reply
    retry_for: float = TLS_POLICY_RETRY_PERIOD

    @classmethod
    def mta_sts(cls, detail: str) -> TlsPolicyFailure:
        return cls(TLS_POLICY_FAILED.with_text(f"{TLS_POLICY_FAILED.text}: {detail}"))

    @classmethod
    def dane(cls, detail: str) -> TlsPolicyFailure:
        return cls(DANE_FAILED.with_text(f"{DANE_FAILED.text}: {detail}"))


@dataclass(frozen=True, slots=True)
class OutboundTlsPolicy:
    """The TLS policy of one destination; see the module docstring."""

    destination: str
    mode: TlsMode
    sts: StsLookup
    dane: Mapping[str, tuple[TlsaRecord, ...]] = field(default_factory=dict)  # host -> TLSA (authenticated)
    dane_errors: Mapping[str, str] = field(default_factory=dict)  # host -> why its TLSA lookup failed

    def allows(self, mx_host: str) -> bool:
        """Whether delivery to `mx_host` is allowed by the MTA-STS `mx:` patterns (always outside enforce)."""
        if self.mode is not TlsMode.MTA_STS_ENFORCE or self.sts.policy is None:
            return True
        return self.sts.policy.matches(mx_host)

    def would_allow(self, mx_host: str) -> bool:
        """What an enforce policy would say of `mx_host` (testing reports it; True without a policy)."""
        return self.sts.policy is None or self.sts.policy.mode == "none" or self.sts.policy.matches(mx_host)

    def tlsa(self, mx_host: str) -> tuple[TlsaRecord, ...]:
        """The usable, authenticated TLSA records of `mx_host` (DANE-TA, DANE-EE); () when none."""
        records = self.dane.get(_host(mx_host), ())
        return tuple(record for record in records if record.usage in USABLE_USAGES)

    def tls_required(self, mx_host: str) -> bool:
        """TLS is mandatory for `mx_host`: an enforce policy, or any authenticated TLSA record."""
        return self.mode is TlsMode.MTA_STS_ENFORCE or bool(self.dane.get(_host(mx_host)))

    def dane_unavailable(self, mx_host: str) -> str:
        """Why the TLSA lookup of `mx_host` failed, "" when it did not: do not deliver to that host now."""
        return self.dane_errors.get(_host(mx_host), "")


def _host(name: str) -> str:
    return name.lower().rstrip(".")


@functools.cache
def default_sts_cache() -> StsPolicyCache:
    """The process's MTA-STS cache with the `[mta_sts]` defaults (system trust, port 443), for callers
    that pass none; the app makes its own from its settings (`StsPolicyCache.from_settings`)."""
    return StsPolicyCache.from_settings(MtaStsSettings())


async def outbound_tls_policy(
    resolver: Resolver,
    destination: str,
    mx_hosts: Sequence[str],
    *,
    sts: StsPolicyCache | None = None,
    port: int = 25,
) -> OutboundTlsPolicy:
    """The TLS policy for delivering to `destination` through `mx_hosts`; never raises for DNS or network
    trouble. `sts` is the node's MTA-STS cache (`StsPolicyCache.from_settings(settings.mta_sts)`; None: the
    process's default one, `default_sts_cache()`);
    `port` is the SMTP port the hosts are reached on (the TLSA name is `_<port>._tcp.<host>`)."""
    destination = _host(destination)
    hosts = list(dict.fromkeys(_host(host) for host in mx_hosts if host))
    lookup, answers = await asyncio.gather(
        (sts or default_sts_cache()).lookup(resolver, destination),
        asyncio.gather(*(_tlsa(resolver, host, port) for host in hosts)),
    )
    mode = TlsMode.OPPORTUNISTIC
    if lookup.policy is not None and lookup.policy.mode == "enforce":
        mode = TlsMode.MTA_STS_ENFORCE
    elif lookup.policy is not None and lookup.policy.mode == "testing":
        mode = TlsMode.MTA_STS_TESTING
    dane = {host: records for host, (records, _) in zip(hosts, answers, strict=True) if records}
    errors = {host: error for host, (_, error) in zip(hosts, answers, strict=True) if error}
    return OutboundTlsPolicy(destination, mode, lookup, dane, errors)


async def _tlsa(resolver: Resolver, host: str, port: int) -> tuple[tuple[TlsaRecord, ...], str]:
    """The host's TLSA records when the answer was authenticated, and why the lookup failed ("" if not)."""
    name = f"_{port}._tcp.{host}"
    try:
        answer = await resolver.tlsa(name)
    except NxDomain:
        return (), ""
    except DnsError as error:
        return (), f"TLSA {name}: {error}"
    return (answer.records if answer.authenticated else ()), ""


# -- verifying a peer's chain against TLSA records (RFC 7672 §3)


def verify_dane(peer_chain_der: Sequence[bytes], records: Sequence[TlsaRecord], mx_host: str) -> bool:
    """Whether the server chain (leaf first, DER) matches a usable TLSA record for `mx_host`."""
    chain = _parse_chain(peer_chain_der[:MAX_CHAIN])
    if not chain:
        return False
    leaf = chain[0]
    if any(record.usage == DANE_EE and _matches(record, leaf) for record in records):
        return True
    anchors = [record for record in records if record.usage == DANE_TA]
    if not anchors or not _names_match(leaf, _host(mx_host)):
        return False
    now = datetime.now(UTC)
    current = leaf
    seen = {0}
    while _valid_at(current, now):
        issuer_index = _issuer_of(current, chain, seen)
        if issuer_index is None:
            return False
        seen.add(issuer_index)
        current = chain[issuer_index]
        if any(_matches(record, current) for record in anchors):
            return _valid_at(current, now)
    return False


def _parse_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    """The certificates, stopping at the first that does not parse (nothing after it can be trusted)."""
    parsed: list[x509.Certificate] = []
    for der in chain_der:
        try:
            parsed.append(x509.load_der_x509_certificate(der))
        except ValueError:
            break
    return parsed


def _matches(record: TlsaRecord, certificate: x509.Certificate) -> bool:
    if record.selector == 0:
        selected = certificate.public_bytes(Encoding.DER)
    elif record.selector == 1:
        selected = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    else:
        return False
    if record.matching_type == 0:
        digest = selected
    elif record.matching_type == 1:
        digest = hashlib.sha256(selected).digest()
    elif record.matching_type == 2:
        digest = hashlib.sha512(selected).digest()
    else:
        return False
    return hmac.compare_digest(digest, record.data)


def _issuer_of(certificate: x509.Certificate, chain: list[x509.Certificate], seen: set[int]) -> int | None:
    """The index of a certificate of the chain, not yet on the path, whose key signed `certificate`."""
    for index, candidate in enumerate(chain):
        if index in seen or candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return index
    return None


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _names_match(certificate: x509.Certificate, host: str) -> bool:
    """RFC 7672 §3.2.3: the DNS-IDs (subjectAltName dNSName), or the CN when there is none, against the
    MX host; `*.` matches exactly one whole leftmost label."""
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    for name in names:
        name = _host(name)
        if name == host:
            return True
        if name.startswith("*."):
            label, dot, parent = host.partition(".")
            if label and dot and parent == name[2:] and "*" not in parent:
                return True
    return False
