"""Mailstore: mailboxes, folders, messages with UIDs, UIDVALIDITY, flags and internal dates."""

from postroom.mailstore.store import (
    FolderSummary,
    LocalDelivery,
    MailboxMissingError,
    Mailstore,
    StoredMessage,
    deliver,
)

__all__ = ["FolderSummary", "LocalDelivery", "MailboxMissingError", "Mailstore", "StoredMessage", "deliver"]
