"""Value types shared by every room: addresses, replies, envelopes.

Nothing here does I/O; everything is a frozen value.
"""

from postroom.model.address import Address, AddressError, normalize_domain
from postroom.model.replies import Reply

__all__ = ["Address", "AddressError", "Reply", "normalize_domain"]
