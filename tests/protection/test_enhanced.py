"""Enhanced filtering's walk (protection.enhanced): which hop is the original internet sender, and when
the first hop may be trusted at all (only on the connection's own evidence)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from postroom.model.connectors import ConnectorType, InboundConnector
from postroom.model.ipfilter import IpList
from postroom.protection.enhanced import OriginalSender, original_sender, scope_matches, stamps
from postroom.protection.received import NOT_UNDERSTOOD, ReceivedHop

GATEWAY = "203.0.113.10"  # the third party's outbound IP, the one that connects


def connector(**settings: object) -> InboundConnector:
    base = InboundConnector(
        id=1,
        tenant_id=7,
        name="third party",
        type=ConnectorType.PARTNER,
        sender_ips=(GATEWAY,),
        ips=IpList.parse([GATEWAY]),
    )
    return replace(base, **settings)  # type: ignore[arg-type]


def hop(ip: str, helo: str = "") -> ReceivedHop:
    return ReceivedHop(ipaddress.ip_address(ip), helo)


ORIGIN = hop("198.51.100.7", "mail.origin.example")


@pytest.mark.parametrize(
    ("settings", "hops", "identified", "expected"),
    [
        # Skip the last IP: the gateway wrote the top field, naming the sender.
        ({"ef_skip_last_ip": True}, [ORIGIN], True, OriginalSender("198.51.100.7", "mail.origin.example")),
        # ... past the gateway's own network and a local re-injection.
        (
            {"ef_skip_last_ip": True},
            [hop("127.0.0.1", "localhost"), hop("10.9.8.7"), hop("100.64.1.1"), ORIGIN],
            True,
            OriginalSender("198.51.100.7", "mail.origin.example"),
        ),
        # A connection the connector did not identify is never the trusted gateway.
        ({"ef_skip_last_ip": True}, [ORIGIN], False, None),
        # Listed IPs: the connecting client must be one; listed hops are skipped too.
        (
            {"ef_skip_ips": (GATEWAY, "203.0.113.20-203.0.113.29")},
            [hop("203.0.113.21"), ORIGIN],
            False,
            OriginalSender("198.51.100.7", "mail.origin.example"),
        ),
        ({"ef_skip_ips": ("203.0.113.20/30",)}, [ORIGIN], True, None),
        # An unreadable hop ends the walk: nothing below it can be trusted.
        ({"ef_skip_last_ip": True}, [NOT_UNDERSTOOD, ORIGIN], True, None),
        ({"ef_skip_last_ip": True}, [hop("10.0.0.1")], True, None),
        ({"ef_skip_last_ip": True}, [], True, None),
        # No enhanced filtering on the connector.
        ({}, [ORIGIN], True, None),
    ],
)
def test_the_walk(
    settings: dict[str, object], hops: list[ReceivedHop], identified: bool, expected: OriginalSender | None
) -> None:
    assert original_sender(connector(**settings), GATEWAY, hops, identified=identified) == expected


def test_ef_users_applies_only_when_every_recipient_is_listed() -> None:
    everyone = connector(ef_skip_last_ip=True)
    assert scope_matches(everyone, ["a@northwind.example"])
    listed = connector(ef_skip_last_ip=True, ef_users=("a@northwind.example", "B@northwind.example"))
    assert scope_matches(listed, ["a@northwind.example", "b@northwind.example"])
    assert not scope_matches(listed, ["a@northwind.example", "c@northwind.example"])
    assert not scope_matches(listed, [])


def test_stamps() -> None:
    original = OriginalSender("198.51.100.7", "mail.origin.example")
    assert stamps(original, applied=False) == b"X-Postroom-SkipListedInternetSender: 198.51.100.7\r\n"
    assert stamps(original, applied=True) == (
        b"X-Postroom-SkipListedInternetSender: 198.51.100.7\r\n"
        b"X-Postroom-ExternalOriginalInternetSender: ip=198.51.100.7\r\n"
    )
