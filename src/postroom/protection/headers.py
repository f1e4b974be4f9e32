"""The header fields protection writes, under Postroom's own names (spec §10.7 is their model).

Every message protection inspected carries, above the Received header this node added:
`Authentication-Results` (RFC 8601, the service's authserv-id), `X-Postroom-Antispam-Report`
(`FIELD:value;` pairs: CIP, CTRY, LANG, SCL, SRV, IPV, SFV, PTR, CAT, H, DIR, SPF ...) and
`X-Postroom-Antispam` (`BCL:n;`); with enhanced filtering, `X-Postroom-SkipListedInternetSender` and
`X-Postroom-ExternalOriginalInternetSender`. Headers under `INTERNAL_PREFIX` are the service's own
between its processes and nodes; they, the two enhanced-filtering fields, and any
`Authentication-Results` that claims our authserv-id, are removed from mail that arrives from outside
before anything reads it (RFC 8601 §5).
"""

from __future__ import annotations

AUTHENTICATION_RESULTS = "Authentication-Results"
ANTISPAM_REPORT = "X-Postroom-Antispam-Report"
ANTISPAM = "X-Postroom-Antispam"  # BCL:n;
INTERNAL_PREFIX = "X-Postroom-Organization-"  # internal headers: never trusted from outside
NOT_SCANNED = "X-Postroom-Malware-Scan"  # "not scanned; <engine> unavailable" (engine_unavailable=deliver)
QUARANTINE_RELEASED = "X-Postroom-Quarantine-Released"  # who released it and when
SPAM_VALUE = "This message appears to be spam"  # the X-header action's fixed value (spec §10.4)
# Enhanced filtering for connectors (spec §3.7, `protection.enhanced`): the original internet
# sender's IP the walk past the trusted gateway found, and (`ip=...`) that the stack judged it.
# Ours only: removed from arriving mail like the internal headers.
SKIP_LISTED_SENDER = "X-Postroom-SkipListedInternetSender"
ORIGINAL_SENDER = "X-Postroom-ExternalOriginalInternetSender"
