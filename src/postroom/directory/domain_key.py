"""The domainKey: the label that names a domain's MX host, `<domainKey>.<MX suffix>`.

Derived once when the domain is added and stored with it (never re-derived), so a later change of
the rule cannot move a published MX. The rule (spec §1.3, §14.1): hyphens are removed, dots become
dashes, and a name that had hyphens gets the suffix `01b`, so `a-b.com` (`ab-com01b`) and `a.b-com`
(`a-bcom01b`) cannot collide. A key that is still taken gets the next suffix (`01c`, `01d`, ...).
A key longer than one DNS label (63 octets) is cut and given 8 hex digits of the name's SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

MAX_LABEL = 63


def derive_domain_key(domain: str, is_taken: Callable[[str], bool]) -> str:
    """Return a free domainKey for the ASCII `domain`, asking `is_taken` about candidates."""
    base = domain.replace("-", "").replace(".", "-")
    suffixes = [("01b" if "-" in domain else "")] + [f"01{chr(c)}" for c in range(ord("c"), ord("z") + 1)]
    for suffix in suffixes:
        candidate = _fit(base, suffix, domain)
        if not is_taken(candidate):
            return candidate
    digest = hashlib.sha256(domain.encode()).hexdigest()
    return _fit(base[:40], "-" + digest[:16], domain)


def _fit(base: str, suffix: str, domain: str) -> str:
    candidate = base + suffix
    if len(candidate) <= MAX_LABEL:
        return candidate
    digest = hashlib.sha256(domain.encode()).hexdigest()[:8]
    keep = MAX_LABEL - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"
