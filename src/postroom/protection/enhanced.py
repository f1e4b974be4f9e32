"""Enhanced filtering for connectors (spec §3.7): the original internet sender behind a trusted gateway.

When a tenant's mail reaches the service through a gateway (a third-party filtering service in
front, the tenant's own on-premises server), the connecting IP is the gateway's: SPF, the IP lists,
the DNS blocklists and the antispam report would judge the gateway, not the sender. An inbound
connector with enhanced filtering (`ef_skip_last_ip`, `ef_skip_ips`) says which hops to trust;
`original_sender` walks the message's Received fields (`protection.received`, top = newest) past
them to the first untrusted public IP, which the stack then judges instead.

The walk, for one connector:

1. The connecting client must be the trusted gateway: with `ef_skip_last_ip`, the connector must
   have identified the connection (the client's IP or verified certificate matched the connector,
   `identified`); with `ef_skip_ips`, the client's IP must be one of them. Otherwise nothing is
   skipped (None): a stranger connecting directly is judged on its own IP, whatever its headers say.
2. Each Received field, top first, was written by the hop below the one we trust so far and names
   the client that hop took the message from. A hop whose IP is in `ef_skip_ips` or is not public
   (loopback, RFC 1918, CGNAT, link-local, ULA: the gateway's own network; a re-injection from a
   local content filter) is trusted in turn and the walk goes on; the first other IP is the
   original sender, with the HELO its writer recorded.
3. A field that cannot be read, or running out of fields, ends the walk with None: the connecting
   IP is judged, as without enhanced filtering.

`scope_matches(connector, recipients)`: `ef_users` empty means every recipient; else enhanced
filtering applies only when every recipient is listed, by exact address (spec §3.7).

Security: the only headers read are those written by hops already trusted, and the first hop is
trusted only on the connection's own evidence (step 1); the parser is bounded (`protection.received`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postroom.model.connectors import InboundConnector
from postroom.model.ipfilter import IpAddress, IpList, client_address
from postroom.protection.headers import ORIGINAL_SENDER, SKIP_LISTED_SENDER
from postroom.protection.received import ReceivedHop

# Not the internet: a hop from one of these is inside the gateway's own network.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


@dataclass(frozen=True, slots=True)
class OriginalSender:
    """The first untrusted public hop: the original internet sender's IP and HELO ("" when unknown)."""

    ip: str
    helo: str = ""


def is_public(address: IpAddress) -> bool:
    """Whether `address` can be an internet sender: not loopback, private, shared or link-local."""
    return not any(address.version == net.version and address in net for net in _NOT_PUBLIC)


def original_sender(
    connector: InboundConnector, peer_ip: str, hops: Sequence[ReceivedHop], *, identified: bool
) -> OriginalSender | None:
    """The original sender behind `connector`'s trusted hops (see the module docstring), or None."""
    if not connector.enhanced_filtering:
        return None
    skip = IpList.parse(connector.ef_skip_ips, skip_invalid=True)
    peer = client_address(peer_ip)
    gateway = (connector.ef_skip_last_ip and identified) or (
        peer is not None and skip.match(peer) is not None
    )
    if not gateway:
        return None
    for hop in hops:
        if hop.ip is None:
            return None
        if not is_public(hop.ip) or skip.match(hop.ip) is not None:
            continue
        return OriginalSender(str(hop.ip), hop.helo)
    return None


def scope_matches(connector: InboundConnector, recipients: Iterable[str]) -> bool:
    """Whether enhanced filtering applies to a message for `recipients` (address keys, lower case)."""
    if not connector.ef_users:
        return True
    listed = {user.strip().lower() for user in connector.ef_users}
    wanted = [recipient.lower() for recipient in recipients]
    return bool(wanted) and all(recipient in listed for recipient in wanted)


def stamps(original: OriginalSender, applied: bool) -> bytes:
    """The header fields that record the walk: the original IP, and that it was judged (`applied`)."""
    lines = [f"{SKIP_LISTED_SENDER}: {original.ip}"]
    if applied:
        lines.append(f"{ORIGINAL_SENDER}: ip={original.ip}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
