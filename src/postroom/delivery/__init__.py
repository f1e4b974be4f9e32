"""Delivery agents: local (into the mailstore, at commit) and what remote delivery applies on the way out:
the destination's TLS policy (`tls_policy`: MTA-STS, DANE), remote domain conversion (`conversion`) and
DKIM signing (`dkim_signing`)."""

from postroom.delivery.conversion import convert_for_remote_domain
from postroom.delivery.dkim_signing import NotSigned, sign
from postroom.delivery.local import deliver_at_commit
from postroom.delivery.tls_policy import (
    OutboundTlsPolicy,
    TlsMode,
    TlsPolicyFailure,
    default_sts_cache,
    outbound_tls_policy,
    verify_dane,
)

__all__ = [
    "NotSigned",
    "OutboundTlsPolicy",
    "TlsMode",
    "TlsPolicyFailure",
    "convert_for_remote_domain",
    "default_sts_cache",
    "deliver_at_commit",
    "outbound_tls_policy",
    "sign",
    "verify_dane",
]
