"""No acknowledgement before durability: kill -9 the server mid-stream; every 250 survives.

Several clients stream messages at a real `postroom serve` process; the server is killed with
SIGKILL while transactions are in flight; after a restart, every message that got 250 is delivered
to its mailbox exactly once. Messages that were not acknowledged may or may not arrive (the client
would retry them), but nothing acknowledged is lost.
"""

from __future__ import annotations

from postroom.config import Settings
from tests.support.durability import assert_acknowledged_mail_survives_kill_9


def test_every_acknowledged_message_survives_kill_9(node_settings: Settings) -> None:
    assert_acknowledged_mail_survives_kill_9(node_settings)
