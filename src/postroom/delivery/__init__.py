"""Delivery agents: local (into the mailstore, at commit or by the scheduler); remote comes with sending."""

from postroom.delivery.local import LocalDeliveryAgent, deliver_at_commit

__all__ = ["LocalDeliveryAgent", "deliver_at_commit"]
