"""Live DNS diagnosis of one accepted domain: what is published, what is wrong, and what to publish instead.

`diagnose_domain` asks the DNS through the `Resolver` seam (always `fresh`: the admin just changed a
record and wants to see it) and compares what it finds with the records `postroom.dns.records` says
the domain needs. The result is a list of typed `Finding`s, one or more per area, each with a stable
`code`, a `severity`, the DNS name it is about, what was found, and the fix: a sentence and, where a
record solves it, the exact records to publish. Areas, in order: the domain itself (NXDOMAIN, a CNAME
at the apex), the ownership proof (pending domains), MX, SPF, DKIM, DMARC, client set-up
(autodiscover, autoconfig), MTA-STS and TLS reporting; a tenant's default domain, whose records are the
service zone's MX and SPF, is checked up to SPF. Every area reports an `ok` finding when it
passes, so an admin sees what was checked, not only what failed.

Severity: `error` breaks mail flow, authentication or the proof (the CLI exits 1); `warning` is a
weaker set-up than recommended (`~all`, no DMARC, no MTA-STS); `ok` passed. A DNS failure (timeout,
SERVFAIL) is an error of its own code, never a conclusion about the records.

One module per area, behind this package's face: `common` (findings, codes, the state of one run),
`runner` (`diagnose_domain`), `apex` (the domain itself and the ownership proof), `mx`, `spf`, `dkim`,
`dmarc`, `client_setup`, `mta_sts` and `tls_rpt`.

The same checks serve the CLI (`postroom domain check`) and, later, the admin center; nothing here
prints.

*Security:* everything read from DNS (and the MTA-STS policy fetched over HTTPS) is untrusted text:
it is parsed by the strict parsers of `spf`, `dmarc` and `mta_sts`, compared and quoted back (shortened
to `MAX_QUOTE` characters), never evaluated.
"""

from postroom.dns.diagnosis.common import (
    MAX_QUOTE,
    DomainDiagnosis,
    Finding,
    FindingCode,
    PolicyFetcher,
    Severity,
)
from postroom.dns.diagnosis.dkim import check_dkim_selector
from postroom.dns.diagnosis.runner import diagnose_domain

__all__ = [
    "MAX_QUOTE",
    "DomainDiagnosis",
    "Finding",
    "FindingCode",
    "PolicyFetcher",
    "Severity",
    "check_dkim_selector",
    "diagnose_domain",
]
