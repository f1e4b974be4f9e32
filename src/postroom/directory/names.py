"""Which names a tenant and an accepted domain may have: the naming rules of the directory.

A tenant's name becomes its default domain `<name>.<service domain>`, so it must be one DNS label
and must not be a name the service itself uses under its domain: `RESERVED_TENANT_NAMES` (the
service's well-known host names) and every label of the service's own host names (the node's host
name, the MX suffix, the SPF host) are refused, so no tenant can take `mx`, `protection` or `spf`.

An accepted domain must be a registrable DNS name written without a trailing dot: not an IP
address or address literal (`[192.0.2.1]`, `192.0.2.1`, `2001:db8::1`), not a single label
(`contoso`, `localhost`), not a public suffix (`com`, `co.uk`, `github.io`: the Public Suffix List
as shipped in the `publicsuffixlist` package, read locally, never fetched), and not the service
domain or a name under it (tenants get their default domain there from `postroom tenant add`).

Guarantees: the checks are pure functions of the name and the service's names; every refusal is an
`InvalidInputError` whose message says which rule and what to do instead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from publicsuffixlist import PublicSuffixList

from postroom.directory.errors import InvalidInputError
from postroom.model import AddressError, normalize_domain

TENANT_NAME_MAX = 63

# Host names the service uses, or that mail clients and DNS conventions give a meaning to.
RESERVED_TENANT_NAMES = frozenset(
    {
        "mx",
        "protection",
        "spf",
        "mta-sts",
        "autodiscover",
        "autoconfig",
        "mail",
        "www",
        "admin",
        "postmaster",
        "smtp",
        "imap",
        "submission",
        "dkim",
        "dmarc",
        "abuse",
        "_dmarc",
        "_domainkey",
        "_mta-sts",
    }
)


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped with the package: no network


def service_labels(service_domain: str, service_hosts: Iterable[str]) -> frozenset[str]:
    """The labels of the service's own host names that a tenant name may not take.

    A host under the service domain gives every label it has there (`spf.protection.<domain>`:
    `spf`, `protection`); a host elsewhere gives its first label (the node's host name label).
    """
    labels: set[str] = set()
    for host in service_hosts:
        name = host.strip().rstrip(".").lower()
        if not name:
            continue
        if name.endswith("." + service_domain):
            labels.update(name[: -len(service_domain) - 1].split("."))
        else:
            labels.add(name.split(".")[0])
    return frozenset(labels)


def tenant_label(name: str, service_domain: str, reserved: frozenset[str]) -> str:
    """The tenant name as stored (one lower-case A-label), or `InvalidInputError`."""
    name = name.strip().lower()
    try:
        label = normalize_domain(name)
    except AddressError:
        label = ""
    if not label or "." in label or len(label) > TENANT_NAME_MAX or label.startswith("["):
        raise InvalidInputError(
            f"{name!r} is not a valid tenant name: use letters, digits and hyphens "
            f"(at most {TENANT_NAME_MAX}), it becomes the default domain {name}.{service_domain}"
        )
    if label in RESERVED_TENANT_NAMES or label in reserved:
        raise InvalidInputError(
            f"{label!r} is a name the service uses itself ({label}.{service_domain}); choose another "
            f"tenant name (reserved: {', '.join(sorted(RESERVED_TENANT_NAMES | reserved))})"
        )
    return label


def accepted_domain_name(name: str, service_domain: str) -> str:
    """The ASCII name of a domain a tenant may add, or `InvalidInputError` naming the rule."""
    text = name.strip()
    if text.endswith("."):
        raise InvalidInputError(
            f"{name!r} is not a valid domain name: write it without the trailing dot ({text.rstrip('.')})"
        )
    if _is_ip(text):
        raise InvalidInputError(
            f"{name!r} is an IP address, not a domain name; "
            "an accepted domain is a DNS name such as contoso.com"
        )
    ascii_name = domain_name(text)
    if "." not in ascii_name:
        raise InvalidInputError(
            f"{ascii_name} is a single label, not a domain name on the internet; "
            "add the registered domain, such as contoso.com"
        )
    if _public_suffixes().is_public(ascii_name):
        raise InvalidInputError(
            f"{ascii_name} is a public suffix (Public Suffix List): many organizations register names "
            f"under it, so no one tenant may accept it; add your own domain under it (contoso.{ascii_name})"
        )
    if ascii_name == service_domain or ascii_name.endswith("." + service_domain):
        raise InvalidInputError(
            f"{ascii_name} is inside the service domain {service_domain}; "
            "tenants get their default domain there from `postroom tenant add`"
        )
    return ascii_name


def domain_name(name: str) -> str:
    """The ASCII form of a domain name the user gave (to look one up), or `InvalidInputError`.

    An IP literal is never accepted (`accepted_domain_name`), but a database from before that rule may
    hold one: it is looked up as written, so the operator can still see, check and remove it."""
    if name.strip().startswith("[") or _is_ip(name.strip()):
        return name.strip().lower()
    try:
        return normalize_domain(name)
    except AddressError as error:
        raise InvalidInputError(f"{name!r} is not a valid domain name: {error}") from None


def parent_domains(ascii_name: str) -> list[str]:
    """The names above `ascii_name`, nearest first, stopping before a single label."""
    labels = ascii_name.split(".")
    return [".".join(labels[index:]) for index in range(1, len(labels) - 1)]


def _is_ip(text: str) -> bool:
    candidate = text.strip("[]")
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True
