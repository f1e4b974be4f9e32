"""Mailbox passwords: the policy a new password must meet, Argon2id hashes, and the check at login
(part of the directory service).

Policy (`PasswordPolicy`, from the `[passwords]` settings): at least `min_length` characters (default
8, the NIST SP 800-63B floor) and at most `max_length` (default 256: every input is bounded, and
Argon2 hashes what it is given); not the mailbox's address or its local part (compared without
case); not only whitespace. A refusal states the whole policy.

Guarantees: only Argon2id hashes are stored. `check_password` costs one Argon2 verification
whatever the address: for an unknown address, a recipient that is not a mailbox, or a mailbox with
no password it verifies against a fixed dummy hash made with the same parameters, so its time does
not tell an attacker which addresses exist or have passwords.

Scope: `check_password` is not scoped: it is how an SMTP AUTH or IMAP session establishes one.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from postroom.directory.base import DirectoryBase, parse_address
from postroom.directory.errors import InvalidInputError
from postroom.directory.lookups import find_address
from postroom.directory.records import RecipientKind
from postroom.model import Address, AddressError
from postroom.storage.schema import recipients

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int = MIN_PASSWORD_LENGTH
    max_length: int = MAX_PASSWORD_LENGTH

    def describe(self) -> str:
        return (
            f"a mailbox password has {self.min_length} to {self.max_length} characters, is not the "
            "mailbox's address or the part before the @, and is not only spaces"
        )

    def check(self, password: str, address: Address) -> None:
        """Raise `InvalidInputError` naming the rule `password` breaks, with the whole policy."""
        folded = password.casefold()
        if not password.strip():
            problem = "the password is empty or only spaces"
        elif len(password) < self.min_length:
            problem = f"the password is too short ({len(password)} characters)"
        elif len(password) > self.max_length:
            problem = f"the password is too long ({len(password)} characters)"
        elif folded in {str(address).casefold(), address.key, address.local.casefold()}:
            problem = "the password is the mailbox's address"
        else:
            return
        raise InvalidInputError(f"{problem}: {self.describe()}")


class Credentials(DirectoryBase):
    _hasher: PasswordHasher
    password_policy: PasswordPolicy

    def check_password(self, address: str, password: str) -> bool:
        """True when `password` is the mailbox's password (Argon2id; one verification, always)."""
        stored: str | None = None
        try:
            key = Address.parse(address.strip()).key
        except AddressError:
            key = None
        if key is not None:
            with self._db.read() as conn:
                owner = find_address(conn, key)
                if owner is not None and owner.kind is RecipientKind.MAILBOX:
                    stored = conn.execute(
                        select(recipients.c.password_hash).where(recipients.c.id == owner.recipient_id)
                    ).scalar_one()
        try:
            matched = self._hasher.verify(stored or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return matched and stored is not None

    @functools.cached_property
    def _dummy_hash(self) -> str:
        """A hash of a random secret nobody knows, made with the hasher's own parameters."""
        return self._hasher.hash(secrets.token_urlsafe(32))

    def _hash(self, password: str, address: str) -> str:
        self.password_policy.check(password, parse_address(address))
        return self._hasher.hash(password)
