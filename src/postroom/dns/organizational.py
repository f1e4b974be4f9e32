"""Organizational domains (RFC 7489 §3.2): a name's registered domain, from the Public Suffix List.

`organizational_domain("a.b.contoso.co.uk")` is `contoso.co.uk`: the public suffix (`co.uk`) and one
label more. The list is the one the `publicsuffixlist` package ships (ICANN and private sections, as
DMARC receivers use it), loaded once on first use; a name under no listed suffix falls under the
default rule `*` (its last label is the suffix). A name that is itself a public suffix, or is no DNS
name, is its own organizational domain. Never raises for any input.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from publicsuffixlist import PublicSuffixList

_DNS_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", re.ASCII)


@functools.cache
def _list() -> PublicSuffixList:
    # Loaded on first use, not at import: parsing the list costs time most commands never need.
    return PublicSuffixList()


def organizational_domain(name: str) -> str:
    """The organizational domain of `name` (lower-case, without the trailing dot)."""
    name = name.lower().rstrip(".")
    if not _DNS_NAME.fullmatch(name) or _is_address(name):
        return name
    return _list().privatesuffix(name) or name


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_organization(a: str, b: str) -> bool:
    """Whether the two names share their organizational domain (RFC 7489 §3.2)."""
    return organizational_domain(a) == organizational_domain(b)
