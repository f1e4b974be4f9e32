"""Mailstore: mailboxes by id, folders, messages with UIDs, UIDVALIDITY, flags and internal dates."""

from postroom.mailstore.mailbox import create_mailbox_folders
from postroom.mailstore.store import (
    MAILBOX_FOLDERS,
    SENT_FOLDER,
    FolderSummary,
    LocalDelivery,
    MailboxNotFoundError,
    Mailstore,
    RemovedMail,
    StoredMessage,
    deliver,
    referenced_blobs,
    remove_tenant_mail,
)

__all__ = [
    "MAILBOX_FOLDERS",
    "SENT_FOLDER",
    "FolderSummary",
    "LocalDelivery",
    "MailboxNotFoundError",
    "Mailstore",
    "RemovedMail",
    "StoredMessage",
    "create_mailbox_folders",
    "deliver",
    "referenced_blobs",
    "remove_tenant_mail",
]
