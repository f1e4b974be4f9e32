"""The Sender Rewriting Scheme (SRS): forwarded mail leaves with an envelope sender of ours, so SPF
passes at the destination, and bounces to it find their way back.

The scheme is the one of libsrs2 and postsrsd (Shevek's "SRS0/SRS1" guarded scheme):

    SRS0=HHHHHH=TT=orig-domain=orig-local@<srs domain>        a sender we forward first
    SRS1=HHHHHH=first-forwarder==HHHHHH=TT=orig-domain=orig-local@<srs domain>
                                                               a sender already rewritten by a forwarder

- `TT`: the day of the rewrite (days since the epoch, modulo 1024) in two base32 characters; an
  address is valid for `max_age_days` days after it (a timestamp "from the future" reads as about
  1024 days old, so it is expired).
- `HHHHHH`: an HMAC-SHA256 with the node's secret key, base32, truncated to `HASH_LENGTH` characters
  (30 bits: libsrs2 uses 24). SRS0 hashes the timestamp, the domain and the local part; SRS1 hashes
  the first forwarder's domain and the opaque rest. The hashed fields are joined with NUL and
  lower-cased, so nothing can be moved between fields (a domain that swallows the start of the local
  part) and a relay that changes the case of the address in transit does not break it: a case
  variant decodes to the same address up to case, which names the same mailbox.
- The null sender is never rewritten. An SRS1 sender keeps its first forwarder and gets our hash.

Reversing (`reverse`) is what RCPT on the MX endpoint does for a recipient at the SRS domain whose
local part starts with `SRS0=` or `SRS1=` (any case): the hash must verify against our key (compared
in constant time, case-insensitively: base32), and an SRS0's timestamp must be within `max_age_days`.
An SRS0 decodes to the original address; an SRS1 to the first forwarder's SRS0 address (which that
forwarder verifies); an SRS1 whose first forwarder is our own SRS domain is decoded once more.

Security: the local part is network input. Anything malformed, forged (a hash made without our key,
or for other fields), or expired raises `SrsError`; routing refuses it with 550 5.1.1, so inventing
SRS addresses never makes the node relay. An SRS0 is a capability to send to its original address
for `max_age_days`: routing lets only bounces (the null sender) use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from postroom.model import Address, AddressError

HASH_LENGTH = 6  # base32 characters of the truncated HMAC (30 bits)
TIMESTAMP_SLOTS = 1024  # two base32 characters
DAY = 86_400
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SRS0 = "srs0="
SRS1 = "srs1="
DEFAULT_MAX_AGE_DAYS = 21


class SrsError(ValueError):
    """An SRS address that does not decode: malformed, forged or expired (the message says which)."""


@dataclass(frozen=True, slots=True)
class Srs:
    """The node's SRS: its domain, secret key and validity; `clock` is the time source."""

    domain: str  # ASCII, lower case
    secret: bytes
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the SRS secret key is empty")

    # --- forward ----------------------------------------------------------------------------------
    def forward(self, sender: str) -> str:
        """The envelope sender a forwarded copy of mail from `sender` leaves with ("" stays "")."""
        if not sender:
            return ""
        local, _, domain = sender.rpartition("@")
        if not local or not domain:
            return sender  # not an address we can rewrite (the SMTP core only passes addresses)
        lowered = local.lower()
        if lowered.startswith(SRS0):
            rest = local[len(SRS0) :]
            return self._srs1(domain, rest)
        if lowered.startswith(SRS1):
            parts = local[len(SRS1) :].split("=", 1)
            if len(parts) == 2 and "==" in parts[1]:
                first, rest = parts[1].split("==", 1)
                if first and rest:
                    return self._srs1(first, rest)
        stamp = self._timestamp(self._today())
        code = self._hash(stamp, domain, local)
        return f"SRS0={code}={stamp}={domain}={local}@{self.domain}"

    def _srs1(self, first: str, rest: str) -> str:
        return f"SRS1={self._hash(first, rest)}={first}=={rest}@{self.domain}"

    # --- reverse ----------------------------------------------------------------------------------
    def names(self, address: Address) -> bool:
        """True when `address` is one of ours to decode: at the SRS domain, starting SRS0= or SRS1=."""
        return address.domain == self.domain and address.local[:5].lower() in (SRS0, SRS1)

    def reverse(self, address: Address) -> Address:
        """The address a bounce to `address` goes back to; SrsError when it does not decode."""
        decoded = self._reverse_once(address)
        if self.names(decoded):  # an SRS1 whose first forwarder was this node
            decoded = self._reverse_once(decoded)
        return decoded

    def _reverse_once(self, address: Address) -> Address:
        local = address.local
        kind = local[:5].lower()
        body = local[5:]
        if kind == SRS0:
            parts = body.split("=", 3)
            if len(parts) != 4 or not all(parts):
                raise SrsError("malformed SRS0 address")
            code, stamp, domain, orig_local = parts
            if len(code) != HASH_LENGTH or len(stamp) != 2:
                raise SrsError("malformed SRS0 address")
            self._verify(code, stamp, domain, orig_local)
            day = self._read_timestamp(stamp)
            if (self._today() - day) % TIMESTAMP_SLOTS > self.max_age_days:
                raise SrsError("expired SRS0 address")
            return self._address(f"{orig_local}@{domain}")
        if kind == SRS1:
            parts = body.split("=", 1)
            if len(parts) != 2 or "==" not in parts[1]:
                raise SrsError("malformed SRS1 address")
            code = parts[0]
            first, rest = parts[1].split("==", 1)
            if len(code) != HASH_LENGTH or not first or not rest:
                raise SrsError("malformed SRS1 address")
            self._verify(code, first, rest)
            return self._address(f"SRS0={rest}@{first}")
        raise SrsError("not an SRS address")

    # --- parts ------------------------------------------------------------------------------------
    def _hash(self, *fields: str) -> str:
        data = "\0".join(fields).lower().encode("utf-8", "surrogateescape")
        digest = hmac.new(self.secret, data, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii")[:HASH_LENGTH]

    def _verify(self, code: str, *fields: str) -> None:
        if not hmac.compare_digest(
            self._hash(*fields).encode("ascii"), code.upper().encode("ascii", "replace")
        ):
            raise SrsError("SRS hash does not verify")

    def _today(self) -> int:
        return int(self.clock() // DAY) % TIMESTAMP_SLOTS

    @staticmethod
    def _timestamp(day: int) -> str:
        return BASE32[(day >> 5) & 31] + BASE32[day & 31]

    @staticmethod
    def _read_timestamp(stamp: str) -> int:
        high, low = BASE32.find(stamp[0].upper()), BASE32.find(stamp[1].upper())
        if high < 0 or low < 0:
            raise SrsError("malformed SRS0 timestamp")
        return (high << 5) | low

    @staticmethod
    def _address(text: str) -> Address:
        try:
            return Address.parse(text)
        except AddressError:
            raise SrsError("SRS address decodes to no valid address") from None
