"""Routing: recipient resolution at RCPT (accepted domains, DBEB, relay control, inbound connectors'
relay and Partner restrictions, SRS bounces) and categorizing (expansion, forwarding, SRS rewriting)."""

from postroom.routing.categorize import MAX_FORWARD_HOPS, MAX_GROUP_DEPTH, Categorized, categorize
from postroom.routing.resolve import (
    NO_SERVICE_POSTMASTER,
    Accepted,
    Rejected,
    RejectReason,
    Relayed,
    Resolution,
    ServicePostmaster,
    meets_partner_restrictions,
    names_tenant_domain,
    partner_connector,
    resolve_recipient,
)
from postroom.routing.srs import Srs, SrsError

__all__ = [
    "MAX_FORWARD_HOPS",
    "MAX_GROUP_DEPTH",
    "NO_SERVICE_POSTMASTER",
    "Accepted",
    "Categorized",
    "RejectReason",
    "Rejected",
    "Relayed",
    "Resolution",
    "ServicePostmaster",
    "Srs",
    "SrsError",
    "categorize",
    "meets_partner_restrictions",
    "names_tenant_domain",
    "partner_connector",
    "resolve_recipient",
]
