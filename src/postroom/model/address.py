"""Mail addresses: parsing, IDNA domains, SMTPUTF8 local parts, case-insensitive matching.

An `Address` keeps the local part exactly as written (RFC 5321 says the local part may be
case-sensitive, so it is never rewritten) and the domain in its Unicode form, lower-cased. Matching
uses `key`: the case-folded local part and the ASCII (A-label) domain, which is how the directory
stores and finds recipients.

Security: parsing reads network input. It is bounded (local part 64 octets, domain 255 octets,
address 320) and rejects control characters and a domain ending in a dot (`contoso.com.` is not a
RFC 5321 Domain), so nothing past it needs to re-check the shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_LABEL_OCTETS = 63

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_SPACE = re.compile(r"\s")
_ADDRESS_LITERAL = re.compile(r"\[[^\[\]\\\s]{1,253}\]")


class AddressError(ValueError):
    """An address or domain that is not valid; the message says what is wrong."""


def normalize_domain(text: str) -> str:
    """Return the ASCII (A-label) form of a domain, lower-cased, without a trailing dot.

    Raises `AddressError` for an empty, over-long or non-LDH domain.
    """
    domain = text.strip().rstrip(".")
    if not domain:
        raise AddressError("the domain is empty")
    if _ADDRESS_LITERAL.fullmatch(domain):
        return domain
    try:
        ascii_domain = domain.encode("ascii").decode().lower()
    except UnicodeEncodeError:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii").lower()
        except idna.IDNAError as error:
            raise AddressError(f"{domain!r} is not a valid internationalized domain: {error}") from None
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"the domain is longer than {MAX_DOMAIN_OCTETS} octets")
    labels = ascii_domain.split(".")
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            raise AddressError(f"{domain!r} has an invalid label {label!r}")
    return ascii_domain


def unicode_domain(ascii_domain: str) -> str:
    """Return the Unicode (U-label) form of an ASCII domain, for display."""
    if "xn--" not in ascii_domain:
        return ascii_domain
    try:
        return idna.decode(ascii_domain)
    except idna.IDNAError:
        return ascii_domain


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox address: `local@domain`, the domain held in its ASCII (A-label) form."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse `local@domain` (no angle brackets). Raises `AddressError` naming the fault."""
        if _CONTROL.search(text):
            raise AddressError("the address contains a control character")
        local, sep, domain = text.rpartition("@")
        if not sep or not local:
            raise AddressError(f"{text!r} is not of the form local@domain")
        if _SPACE.search(domain):
            raise AddressError(f"the domain {domain!r} contains white space")
        if domain.endswith("."):
            # RFC 5321 §4.1.2: a Domain is sub-domains joined by dots; a mailbox's domain has no root dot.
            raise AddressError(f"the domain {domain!r} ends with a dot")
        if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
            raise AddressError(f"the local part {local!r} is not valid")
        if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
            raise AddressError(f"the local part is longer than {MAX_LOCAL_OCTETS} octets")
        return cls(local=local, domain=normalize_domain(domain))

    @property
    def key(self) -> str:
        """The form used to match addresses: case-folded local part, ASCII domain."""
        return f"{self.local.casefold()}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII (the domain can always be sent as A-labels)."""
        return not self.local.isascii()

    @property
    def display(self) -> str:
        """The address with its domain in Unicode, for people."""
        return f"{self.local}@{unicode_domain(self.domain)}"

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def destination_of(recipient: str) -> str:
    """The domain a recipient's mail goes to: ASCII (IDNA A-label), lower case; "" for none."""
    domain = recipient.rpartition("@")[2].strip().rstrip(".").lower()
    if domain.startswith("[") or domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain
