"""The composition root: builds a node from settings; only this package knows the concrete classes."""

from postroom.app.blob_sweep import BlobSweep, sweep_blobs
from postroom.app.domains import ProofOutcome, ProofResult, verify_ownership
from postroom.app.node import App, Listening
from postroom.app.setup import InitOptions, SetupError, init_node
from postroom.app.startup import StartupError, check
from postroom.app.tenants import TenantRemoval, remove_tenant

__all__ = [
    "App",
    "BlobSweep",
    "InitOptions",
    "Listening",
    "ProofOutcome",
    "ProofResult",
    "SetupError",
    "StartupError",
    "TenantRemoval",
    "check",
    "init_node",
    "remove_tenant",
    "sweep_blobs",
    "verify_ownership",
]
