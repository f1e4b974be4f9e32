"""The blob sweep: remove the blobs that no stored, spooled or quarantined message points at any more.

Nothing else removes them. Blobs are content-addressed and shared, so deleting a message or a spool
entry never deletes its blob: a remotely delivered message's spooled body, a blob whose put committed
but whose message never did (a crash, a refusal after the put), and the blobs of removed messages
(deleted or expired quarantined ones too) stay until this sweep (tenant removal deletes its own at
once). `postroom blobs sweep` runs it, on either store.

For each batch of blobs last stored more than `grace` ago, the owners of the rows that point at blobs
say which are still used (`mailstore.referenced_blobs`, `queue.spooled_blobs`,
`quarantine.quarantined_blobs`, each a read after every commit so far); the rest go through
`BlobStore.discard_unused`, which keeps any of them stored again since the cutoff. A blob is put
seconds before the commit of the message that points at it, so a blob that old with no row is
garbage; `grace` (an hour) is far past the slowest commit.

Cost: each batch is one read per owner with the batch's ids (`SWEEP_BATCH`); none of
`messages.blob_id`, `spool_messages.blob_id` and `quarantine.blob_id` is indexed (an index would cost
every received message a write), so on a large mailstore each batch scans those tables once: a sweep
is an operator's occasional job, not something to run every minute.

Failure: an error stops the sweep where it is and raises; what it removed stays removed, what it had
not reached stays, and the next sweep starts over. A dry run (`apply=False`) only counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from postroom.mailstore import referenced_blobs
from postroom.quarantine import quarantined_blobs
from postroom.queue import spooled_blobs
from postroom.storage import BlobStore, Database

SWEEP_GRACE_SECONDS = 3600.0  # a blob stored more recently may belong to a commit on its way
SWEEP_BATCH = 10_000  # blobs per reference check (one scan of each owner's table without an index)


@dataclass(frozen=True, slots=True)
class BlobSweep:
    """What one sweep found (and, when applied, removed)."""

    examined: int  # blobs last stored before the cutoff
    unused: int  # of those, the ones no message, spooled or quarantined message points at
    removed: int  # of those, the ones deleted (0 in a dry run)


def sweep_blobs(
    database: Database,
    blobs: BlobStore,
    *,
    apply: bool,
    grace: float = SWEEP_GRACE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> BlobSweep:
    cutoff = clock() - grace
    examined = unused_count = removed = 0
    for batch in blobs.stored_before(cutoff, batch=SWEEP_BATCH):
        ids = frozenset(batch)
        with database.read() as conn:
            used = referenced_blobs(conn, ids) | spooled_blobs(conn, ids) | quarantined_blobs(conn, ids)
        unused = ids - used
        examined += len(ids)
        unused_count += len(unused)
        if apply and unused:
            removed += blobs.discard_unused(sorted(unused), stored_before=cutoff)
    return BlobSweep(examined=examined, unused=unused_count, removed=removed)
