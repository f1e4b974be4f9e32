"""Quarantine: messages protection held instead of delivering, with their recipients, verdict, policy
and expiry; who may preview, release, request release and delete them (spec §10.6).

`hold` (and the blob, tenant-removal and purge helpers) write in a caller's transaction;
`QuarantineService` is what administrators and recipients use, scoped like every service."""

from postroom.quarantine.hold import (
    ADMIN_ONLY_REASONS,
    MAX_RETENTION_DAYS,
    PURGE_BATCH,
    Hold,
    QuarantineReason,
    RemovedQuarantine,
    hold,
    purge_expired,
    quarantined_blobs,
    remove_tenant_quarantine,
)
from postroom.quarantine.preview import PreviewAttachment, Rendering, html_to_text, inert, render
from postroom.quarantine.service import (
    LIST_LIMIT,
    Learn,
    Preview,
    QuarantineAccessError,
    QuarantinedMessage,
    QuarantinedRecipient,
    QuarantineError,
    QuarantineNotFoundError,
    QuarantineRequestError,
    QuarantineService,
    QuarantineUser,
    Released,
    released_prefix,
)

__all__ = [
    "ADMIN_ONLY_REASONS",
    "LIST_LIMIT",
    "MAX_RETENTION_DAYS",
    "PURGE_BATCH",
    "Hold",
    "Learn",
    "Preview",
    "PreviewAttachment",
    "QuarantineAccessError",
    "QuarantineError",
    "QuarantineNotFoundError",
    "QuarantineReason",
    "QuarantineRequestError",
    "QuarantineService",
    "QuarantineUser",
    "QuarantinedMessage",
    "QuarantinedRecipient",
    "Released",
    "RemovedQuarantine",
    "Rendering",
    "hold",
    "html_to_text",
    "inert",
    "purge_expired",
    "quarantined_blobs",
    "released_prefix",
    "remove_tenant_quarantine",
    "render",
]
