"""Storage: one database (SQLite embedded, PostgreSQL to scale out) and the blob store."""

from postroom.storage.blobs import BlobMissingError, BlobStore
from postroom.storage.database import Database, GroupCommitter, SchemaTooNewError, WriterStoppedError

__all__ = [
    "BlobMissingError",
    "BlobStore",
    "Database",
    "GroupCommitter",
    "SchemaTooNewError",
    "WriterStoppedError",
]
