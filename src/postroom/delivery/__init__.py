"""Delivery agents: local (into the mailstore, at commit); remote comes with sending."""

from postroom.delivery.local import deliver_at_commit

__all__ = ["deliver_at_commit"]
