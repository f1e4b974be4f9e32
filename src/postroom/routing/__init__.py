"""Routing: recipient resolution at RCPT (accepted domains, DBEB, relay control) and categorizing."""

from postroom.routing.categorize import MAX_GROUP_DEPTH, Categorized, categorize
from postroom.routing.resolve import (
    NO_SERVICE_POSTMASTER,
    Accepted,
    Rejected,
    RejectReason,
    Resolution,
    ServicePostmaster,
    resolve_recipient,
)

__all__ = [
    "MAX_GROUP_DEPTH",
    "NO_SERVICE_POSTMASTER",
    "Accepted",
    "Categorized",
    "RejectReason",
    "Rejected",
    "Resolution",
    "ServicePostmaster",
    "categorize",
    "resolve_recipient",
]
