"""DNS for Postroom: the `Resolver` seam every room asks the DNS through, and its dnspython implementation.

The public face is re-exported here; the modules behind it are private. See `postroom.dns.resolver` for
the outcomes of a lookup, the exception tree and the cache.
"""

from postroom.dns.resolver import (
    MAX_NEGATIVE_TTL,
    MAX_POSITIVE_TTL,
    Answer,
    Clock,
    DnsError,
    DnsResolver,
    DnsTemporaryError,
    InvalidName,
    MxRecord,
    NxDomain,
    Resolver,
    TxtRecord,
)

__all__ = [
    "MAX_NEGATIVE_TTL",
    "MAX_POSITIVE_TTL",
    "Answer",
    "Clock",
    "DnsError",
    "DnsResolver",
    "DnsTemporaryError",
    "InvalidName",
    "MxRecord",
    "NxDomain",
    "Resolver",
    "TxtRecord",
]
