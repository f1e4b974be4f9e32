"""Storage: one database (SQLite embedded, PostgreSQL to scale out) and the blob store."""

from postroom.storage.blobs import (
    BlobMissingError,
    BlobStore,
    DatabaseBlobStore,
    FileBlobStore,
    open_blob_store,
)
from postroom.storage.database import (
    Database,
    GroupCommitter,
    SchemaTooNewError,
    WriterStoppedError,
    announce_after_commit,
)

__all__ = [
    "BlobMissingError",
    "BlobStore",
    "Database",
    "DatabaseBlobStore",
    "FileBlobStore",
    "GroupCommitter",
    "SchemaTooNewError",
    "WriterStoppedError",
    "announce_after_commit",
    "open_blob_store",
]
