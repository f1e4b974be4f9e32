"""Delivery agents: local (into the mailstore); remote (by MX or connector) comes with sending."""

from postroom.delivery.local import LocalDeliveryAgent

__all__ = ["LocalDeliveryAgent"]
