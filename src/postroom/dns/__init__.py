"""DNS for Postroom: the resolver seam, the records a domain must publish, and the live checks.

The public face is re-exported here; the modules behind it are private:

- `resolver`: the `Resolver` seam every room asks the DNS through, its dnspython implementation, the
  outcomes of a lookup, the exception tree and the cache;
- `records`: the records a domain (and the service) must publish, from settings and directory facts;
- `diagnosis`: the live checks of one domain, typed findings with the fix;
- `spf`, `dmarc`, `mta_sts`: parsers of what is published (and the MTA-STS policy fetch);
- `organizational`: organizational domains, from the Public Suffix List.
"""

from postroom.dns.diagnosis import (
    DomainDiagnosis,
    Finding,
    FindingCode,
    PolicyFetcher,
    Severity,
    check_dkim_selector,
    diagnose_domain,
)
from postroom.dns.mta_sts import FetchedPolicy, fetch_sts_policy
from postroom.dns.records import (
    DkimSelector,
    DnsRecord,
    DomainFacts,
    NotADomainName,
    dkim_record,
    domain_records,
    mta_sts_policy,
    service_records,
)
from postroom.dns.resolver import (
    MAX_NEGATIVE_TTL,
    MAX_POSITIVE_TTL,
    Answer,
    Clock,
    DnsError,
    DnsResolver,
    DnsTemporaryError,
    DnsTimeout,
    InvalidName,
    MxRecord,
    NxDomain,
    Resolver,
    TlsaAnswer,
    TlsaRecord,
    TxtRecord,
    verified_ptr,
)

__all__ = [
    "MAX_NEGATIVE_TTL",
    "MAX_POSITIVE_TTL",
    "Answer",
    "Clock",
    "DkimSelector",
    "DnsError",
    "DnsRecord",
    "DnsResolver",
    "DnsTemporaryError",
    "DnsTimeout",
    "DomainDiagnosis",
    "DomainFacts",
    "FetchedPolicy",
    "Finding",
    "FindingCode",
    "InvalidName",
    "MxRecord",
    "NotADomainName",
    "NxDomain",
    "PolicyFetcher",
    "Resolver",
    "Severity",
    "TlsaAnswer",
    "TlsaRecord",
    "TxtRecord",
    "check_dkim_selector",
    "diagnose_domain",
    "dkim_record",
    "domain_records",
    "fetch_sts_policy",
    "mta_sts_policy",
    "service_records",
    "verified_ptr",
]
