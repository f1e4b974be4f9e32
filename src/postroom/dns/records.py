"""The DNS records a domain must publish for Postroom to carry its mail, and the service's own records.

Pure functions of the service's settings and a domain's facts (`DomainFacts`: its name, domainKey,
ownership state, DKIM public keys): no I/O, the same answer every time for the same state, so
`postroom domain records`, the live checks (`postroom.dns.diagnosis`) and the admin center agree on
what "correct" means. Values follow spec §1 under Postroom's names:

- MX `0 <domainKey>.<MX suffix>` and nothing else (the MX is the service's own host for this domain),
  unless the tenant's scenario (spec §4) puts the MX at its on-premises server or a third party
  (`DomainFacts.mx_elsewhere`): then that host, and the MTA-STS policy names it (no MTA-STS records
  when the third party's host is not known);
- one SPF record, `v=spf1 [ip4:/ip6: of the organization's own senders] [include:s] include:<SPF host>
  -all`;
- DKIM: TXT records with the key (`v=DKIM1; k=rsa; p=...`) at both selectors. Postroom does not run
  an authoritative DNS server, so it cannot host the CNAME targets a hosted service would; the checks
  accept a selector published as a CNAME to any name whose TXT holds the same key;
- DMARC at `p=none` with aggregate reports to the domain's postmaster: monitor, then move to
  `p=quarantine` and `p=reject` once the reports show every legitimate sender passing;
- client set-up: `autodiscover` and `autoconfig` CNAMEs to the service host;
- MTA-STS (RFC 8461): `mta-sts.<domain>` CNAME to the service host, whose admin listener serves the
  policy, and the `_mta-sts` TXT whose `id` is a digest of that policy (it changes exactly when the
  policy does); TLS reporting (RFC 8460) at `_smtp._tls`;
- the ownership proof TXT while the domain is pending.

A tenant's default domain (`<tenant>.<service domain>`) lives in the service's zone, and the service
publishes only its MX and SPF there (`service_records`, which lists them): that pair is all its
`domain_records` are, and all the live checks ask of it.

A name that cannot carry these records (an IP literal, a name that is not an LDH host name) gets
none: `domain_records` raises `NotADomainName` saying why, so a database that holds one from before the
directory refused them still gives each command an answer, never a crash.

Every TTL is one hour (spec §1.5). TXT values longer than one 255-octet character-string are split
into several strings when rendered as zone text (RFC 7208 §3.3).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.config.settings import ServiceSettings
from postroom.dns.mta_sts import policy_id, render_sts_policy

RECORD_TTL = 3600  # seconds; spec §1.3 and §1.5
MTA_STS_MAX_AGE = 604_800  # one week, the RFC 8461 §3.2 example for a policy in force
TXT_STRING_MAX = 255  # octets in one DNS character-string (RFC 1035 §3.3)
MAX_NAME_LENGTH = 253  # characters of a domain name written without the trailing dot
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII | re.IGNORECASE)


class NotADomainName(ValueError):
    """The name cannot publish records (an IP literal, not an LDH host name); the message says why."""


def check_domain_name(name: str) -> None:
    """Raise `NotADomainName` unless `name` is a domain that can publish records: lower-case LDH
    labels (A-labels), two or more of them, a top-level label that is not all digits."""
    literal = name.strip("[]").removeprefix("ipv6:").removeprefix("IPv6:")
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        raise NotADomainName(
            f"{name!r} is an IP address, not a domain: it has no DNS zone to publish records in; "
            f"remove it (`postroom domain remove {name}`)"
        )
    labels = name.removesuffix(".").split(".")
    if (
        len(name) > MAX_NAME_LENGTH
        or len(labels) < 2
        or not all(_LDH_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise NotADomainName(
            f"{name!r} is not a domain name that can publish DNS records (letters, digits and hyphens "
            "in two or more labels, A-labels for international names)"
        )


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One record to publish. `value` is the MX exchange, the CNAME target, the address, or the whole
    TXT text (unquoted, unsplit); `priority` is the MX preference. `purpose` says why it is needed."""

    type: str
    name: str
    value: str
    ttl: int = RECORD_TTL
    priority: int | None = None
    purpose: str = ""

    @property
    def data(self) -> str:
        """The record's data in zone-file presentation: `0 host.`, `host.`, `"v=spf1 ..."`."""
        if self.type == "MX":
            return f"{self.priority} {self.value}."
        if self.type in ("CNAME", "PTR"):
            return f"{self.value}."
        if self.type == "TXT":
            return " ".join(f'"{chunk}"' for chunk in txt_strings(self.value))
        return self.value

    def zone_line(self) -> str:
        """The record as a line of a BIND zone file, with absolute names."""
        return f"{self.name}.\t{self.ttl}\tIN\t{self.type}\t{self.data}"

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"type": self.type, "name": self.name, "value": self.value, "ttl": self.ttl}
        if self.priority is not None:
            body["priority"] = self.priority
        body["purpose"] = self.purpose
        return body


@dataclass(frozen=True, slots=True)
class DkimSelector:
    """A DKIM selector as the records need it: its name, public key (base64 DER) and whether it signs."""

    selector: str
    public_key: str
    active: bool

    def record_name(self, domain: str) -> str:
        return f"{self.selector}._domainkey.{domain}"

    @property
    def record_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_key}"


@dataclass(frozen=True, slots=True)
class MxElsewhere:
    """The domain's MX is not Postroom's: the tenant's scenario (spec §4) puts its on-premises server
    or a third-party filtering service in front. `host` is the MX exchange to publish ("" when the
    third party's host was not given: any MX but Postroom's is then right)."""

    scenario: str  # "hybrid-3", "third-party-filtering", ...
    at: str  # in words: "the on-premises server", "the third-party filtering service"
    host: str = ""


@dataclass(frozen=True, slots=True)
class DomainFacts:
    """What the records of one accepted domain depend on, as the directory holds it."""

    name: str  # A-label, lower case
    domain_key: str
    verification_record: str | None  # the ownership TXT while the domain is pending, else None
    verification_mx: str | None = None  # the fallback proof's MX exchange while pending, else None
    dkim: tuple[DkimSelector, ...] = ()
    spf_senders: tuple[str, ...] = ()  # the organization's own sending IPs or networks (ip4/ip6)
    spf_includes: tuple[str, ...] = ()  # third-party senders' SPF hosts
    is_default: bool = False  # the tenant's default domain, in the service's zone
    mx_elsewhere: MxElsewhere | None = None  # the tenant's scenario puts the MX at another server


def txt_strings(text: str) -> list[str]:
    """`text` cut into character-strings of at most 255 octets, never inside a UTF-8 sequence."""
    data = text.encode("utf-8")
    chunks: list[str] = []
    while data:
        cut = min(len(data), TXT_STRING_MAX)
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        chunks.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    return chunks or [""]


def spf_value(service: ServiceSettings, facts: DomainFacts) -> str:
    """The one SPF record the domain should publish (spec §1.4)."""
    terms = ["v=spf1"]
    for sender in facts.spf_senders:
        network = ipaddress.ip_network(sender, strict=False)
        terms.append(f"ip{network.version}:{sender}")
    terms += [f"include:{host}" for host in facts.spf_includes]
    terms += [f"include:{service.spf_include}", "-all"]
    return " ".join(terms)


def mx_exchange(service: ServiceSettings, facts: DomainFacts) -> str:
    """The host the domain's MX must name: Postroom's per-domain host, or the scenario's ("" when the
    scenario's third party was not named)."""
    if facts.mx_elsewhere is not None:
        return facts.mx_elsewhere.host
    return service.mx_host(facts.domain_key)


def mx_record(service: ServiceSettings, facts: DomainFacts) -> DnsRecord | None:
    """The one MX record to publish; None when the scenario's third party gave a host not named here."""
    elsewhere = facts.mx_elsewhere
    if elsewhere is None:
        return DnsRecord(
            "MX",
            facts.name,
            service.mx_host(facts.domain_key),
            priority=0,
            purpose="delivers the domain's mail to Postroom; delete every other MX record",
        )
    if not elsewhere.host:
        return None
    return DnsRecord(
        "MX",
        facts.name,
        elsewhere.host,
        priority=0,
        purpose=f"scenario {elsewhere.scenario}: the domain's mail reaches {elsewhere.at} first, which "
        "relays it to Postroom; keep this MX, and no MX at Postroom",
    )


def spf_record(service: ServiceSettings, facts: DomainFacts) -> DnsRecord:
    return DnsRecord(
        "TXT",
        facts.name,
        spf_value(service, facts),
        purpose="SPF: the only v=spf1 record of the domain (merge, never publish two)",
    )


def dkim_record(domain: str, selector: DkimSelector) -> DnsRecord:
    """The TXT record that publishes one DKIM selector's key (RFC 6376 §3.6.1)."""
    return DnsRecord(
        "TXT",
        selector.record_name(domain),
        selector.record_value,
        purpose="DKIM key that signs the domain's mail"
        if selector.active
        else "DKIM key for the next rotation (`postroom domain dkim rotate`)",
    )


def dmarc_value(domain: str) -> str:
    """The DMARC record to start with: monitor only, aggregate reports to the domain's postmaster."""
    return f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"


def tls_rpt_value(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"


def mta_sts_policy(service: ServiceSettings, facts: DomainFacts) -> str | None:
    """The MTA-STS policy text the admin listener serves at `mta-sts.<domain>/.well-known/mta-sts.txt`
    (it names the MX the domain publishes: the scenario's when it is elsewhere); None when that MX is
    a third party's not named here (no policy can be right). `NotADomainName` when the domain's name
    cannot publish records."""
    check_domain_name(facts.name)
    exchange = mx_exchange(service, facts)
    if not exchange:
        return None
    return render_sts_policy(service.mta_sts_mode, [exchange], MTA_STS_MAX_AGE)


def domain_records(service: ServiceSettings, facts: DomainFacts) -> list[DnsRecord]:
    """Every record the domain must publish, in the order an admin would enter them; `NotADomainName`
    when its name cannot publish records."""
    name = facts.name
    check_domain_name(name)
    if facts.is_default:
        return default_domain_records(service, facts)
    records: list[DnsRecord] = []
    if facts.verification_record is not None:
        records.append(
            DnsRecord(
                "TXT",
                name,
                facts.verification_record,
                purpose="proves you own the domain; `postroom domain verify` looks for it (delete it after)",
            )
        )
    mx = mx_record(service, facts)
    records += [mx] if mx is not None else []
    records.append(spf_record(service, facts))
    records += [dkim_record(name, selector) for selector in facts.dkim]
    records += [
        DnsRecord(
            "TXT",
            f"_dmarc.{name}",
            dmarc_value(name),
            purpose="DMARC: start at p=none; once the reports show all your mail passing, "
            "move to p=quarantine, then p=reject",
        ),
        DnsRecord(
            "CNAME", f"autodiscover.{name}", service.hostname, purpose="mail clients find their settings"
        ),
        DnsRecord(
            "CNAME", f"autoconfig.{name}", service.hostname, purpose="mail clients find their settings"
        ),
    ]
    policy = mta_sts_policy(service, facts)
    if policy is not None:
        records += [
            DnsRecord(
                "CNAME",
                f"mta-sts.{name}",
                service.hostname,
                purpose="MTA-STS: the host that serves the policy over HTTPS",
            ),
            DnsRecord(
                "TXT",
                f"_mta-sts.{name}",
                f"v=STSv1; id={policy_id(policy)}",
                purpose="MTA-STS: tells senders to fetch the policy and require TLS to the MX",
            ),
        ]
    records.append(
        DnsRecord(
            "TXT",
            f"_smtp._tls.{name}",
            tls_rpt_value(name),
            purpose="TLS reporting: senders report TLS failures to the postmaster",
        )
    )
    return records


def service_records(service: ServiceSettings, default_domains: Sequence[DomainFacts]) -> list[DnsRecord]:
    """The records of the service's own zone: the host names every customer record points at.

    Needs `service.addresses` (the nodes' public IPs); without them only the tenants' default domains'
    MX and SPF can be given.
    """
    records: list[DnsRecord] = []
    for address in service.addresses:
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        records += [
            DnsRecord(kind, service.hostname, address, purpose="the service host: SMTP, submission, MTA-STS"),
            DnsRecord(
                kind,
                f"*.{service.mx_host_suffix}",
                address,
                purpose="every domain's MX host <domainKey>.<MX suffix> (a wildcard)",
            ),
        ]
    if service.addresses:
        senders = " ".join(
            f"ip{ipaddress.ip_address(address).version}:{address}" for address in service.addresses
        )
        records.append(
            DnsRecord(
                "TXT",
                service.spf_include,
                f"v=spf1 {senders} -all",
                purpose="the SPF host customers include: every address the nodes send from",
            )
        )
        for address in service.addresses:
            records.append(
                DnsRecord(
                    "PTR",
                    ipaddress.ip_address(address).reverse_pointer,
                    service.hostname,
                    purpose="reverse DNS: ask the owner of the address block to set it; receivers "
                    "reject mail from addresses without a matching PTR",
                )
            )
    for facts in default_domains:
        records += default_domain_records(service, facts)
    return records


def default_domain_records(service: ServiceSettings, facts: DomainFacts) -> list[DnsRecord]:
    """What the service's zone publishes for a tenant's default domain: its MX and SPF."""
    return [
        DnsRecord(
            "MX",
            facts.name,
            service.mx_host(facts.domain_key),
            priority=0,
            purpose=f"tenant default domain {facts.name}, in the service zone",
        ),
        DnsRecord("TXT", facts.name, spf_value(service, facts), purpose=f"SPF of {facts.name}"),
    ]
