"""Routing: recipient resolution at RCPT (accepted domains, DBEB, relay control) and categorizing."""

from postroom.routing.categorize import MAX_GROUP_DEPTH, Categorized, categorize
from postroom.routing.resolve import Accepted, Rejected, RejectReason, Resolution, resolve_recipient

__all__ = [
    "MAX_GROUP_DEPTH",
    "Accepted",
    "Categorized",
    "RejectReason",
    "Rejected",
    "Resolution",
    "categorize",
    "resolve_recipient",
]
