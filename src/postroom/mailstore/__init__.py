"""Mailstore: mailboxes, folders, messages with UIDs, UIDVALIDITY, flags and internal dates."""

from postroom.mailstore.store import (
    FolderSummary,
    LocalDelivery,
    Mailstore,
    StoredMessage,
    deliver,
)

__all__ = ["FolderSummary", "LocalDelivery", "Mailstore", "StoredMessage", "deliver"]
