"""Migration: move mailboxes from an existing IMAP service into Postroom mailboxes (spec §2).

`read_batch` reads the CSV batch, `SourceServer` is the old server, `Migration.run` copies every
row's mailbox (idempotent, resumable) and returns a `BatchReport`. See `migration.copy` for what is
copied and how a re-run resumes. The room owns the `migrated_messages` table; it writes mailboxes only
through `postroom.mailstore.mailbox`.
"""

from postroom.migration.batch import MAX_BYTES, MAX_ROWS, BatchError, BatchRow, parse_batch, read_batch
from postroom.migration.copy import (
    MAX_ITEMS,
    MAX_MESSAGE_SIZE,
    BatchReport,
    MailboxReport,
    Migration,
    Progress,
    target_flags,
)
from postroom.migration.folders import FolderPlan, PlannedFolder, SkippedFolder, plan_folders
from postroom.migration.source import (
    Security,
    SourceError,
    SourceFolder,
    SourceLoginError,
    SourceMailbox,
    SourceMessage,
    SourceServer,
)

__all__ = [
    "MAX_BYTES",
    "MAX_ITEMS",
    "MAX_MESSAGE_SIZE",
    "MAX_ROWS",
    "BatchError",
    "BatchReport",
    "BatchRow",
    "FolderPlan",
    "MailboxReport",
    "Migration",
    "PlannedFolder",
    "Progress",
    "Security",
    "SkippedFolder",
    "SourceError",
    "SourceFolder",
    "SourceLoginError",
    "SourceMailbox",
    "SourceMessage",
    "SourceServer",
    "parse_batch",
    "plan_folders",
    "read_batch",
    "target_flags",
]
