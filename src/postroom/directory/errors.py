"""The directory's one exception tree; every message says what is wrong and what to do.

DirectoryError
├── NotFoundError      no such tenant, domain or recipient (for this scope: another tenant's
│                      rows are reported exactly as rows that do not exist)
├── ConflictError      the change collides with what exists (a name in use, a group cycle)
├── InvalidInputError  the input breaks a rule (syntax, reserved name, password policy)
└── RefusedError       the scope may not do this at all (a tenant adding tenants)
"""

from __future__ import annotations


class DirectoryError(Exception):
    """A directory request that cannot be done; the message says why and what to do."""


class NotFoundError(DirectoryError):
    pass


class ConflictError(DirectoryError):
    pass


class InvalidInputError(DirectoryError):
    pass


class RefusedError(DirectoryError):
    pass
