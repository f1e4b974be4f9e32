"""Asking STARTTLS clients for a certificate, and not asking again those whose certificate failed.

The MX endpoint asks every client for a TLS client certificate after STARTTLS (spec §3.4: an inbound
connector may identify a tenant's server by the certificate it presents): `ClientCertificates`
holds the listener's asking context (`verify_mode = CERT_OPTIONAL` with the CAs that sign the
connectors' certificates). A client that sends none is served as before.

The catch: Python's `ssl` has no verify callback, so OpenSSL fails the handshake when a client sends
a certificate that does not verify (self-signed, a CA the node does not trust, or a certificate
without the TLS client purpose, as a server certificate used as a client one often is). What a real
client then does: Postfix (TLS 1.3) sees the handshake done, loses the connection during EHLO and
defers the message (4.4.2), and would do the same at every retry until its queue lifetime ends;
swaks stops with an error. So a listener that asks would lock such a server out for good. Instead,
`failed(client)` remembers the client address whose handshake failed while asked, and for
`retry_seconds` (a day) `context_for(client)` gives that client the listener's ordinary context,
which asks for nothing: its next try (Postfix retries after minutes) succeeds as without this
feature, only not attributed by certificate (its IP may still attribute it). The refusal that then
follows, if any, names the fix (a connector's relay refusal), and the log says why at warning.

Bounds: at most `max_clients` addresses are remembered (the oldest are forgotten first); an entry
lasts `retry_seconds`. Per process: each worker learns on its own.

*Security:* the address is the socket's (or a trusted balancer's PROXY header's), so a stranger cannot
make the node stop asking another host for its certificate.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable

RETRY_SECONDS = 86_400.0  # a client whose certificate failed is not asked again for this long
MAX_CLIENTS = 10_000  # client addresses remembered

log = logging.getLogger(__name__)


class ClientCertificates:
    """A listener's request for client certificates, and the clients it no longer asks."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        retry_seconds: float = RETRY_SECONDS,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if context.verify_mode is ssl.CERT_NONE:
            raise ValueError("a context that asks for client certificates verifies them (CERT_OPTIONAL)")
        self.context = context
        self.retry_seconds = retry_seconds
        self.max_clients = max_clients
        self._clock = clock
        self._failed: OrderedDict[str, float] = OrderedDict()  # client -> when, oldest first

    def asks(self, client: str) -> bool:
        """Whether `client` is asked for a certificate (not one whose certificate failed lately)."""
        since = self._failed.get(client)
        if since is None:
            return True
        if self._clock() - since < self.retry_seconds:
            return False
        del self._failed[client]
        return True

    def context_for(self, client: str, plain: ssl.SSLContext) -> ssl.SSLContext:
        """The context of `client`'s handshake: the asking one, or `plain` for a client not asked."""
        return self.context if self.asks(client) else plain

    def failed(self, client: str, error: BaseException) -> None:
        """`client`'s handshake failed while it was asked: do not ask it again for a while."""
        self._failed.pop(client, None)
        self._failed[client] = self._clock()
        while len(self._failed) > self.max_clients:
            self._failed.popitem(last=False)
        log.warning(
            "TLS handshake with %s failed after asking for a client certificate (%s); not asking it "
            "for one for %.0f s: add its CA to [tls] client_ca_file if an inbound connector should "
            "know it by certificate",
            client,
            getattr(error, "reason", None) or error,
            self.retry_seconds,
        )
