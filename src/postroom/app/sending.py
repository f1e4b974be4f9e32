"""Outbound sending, composed: the remote delivery agent built from the node's settings and services.

`remote_delivery(settings, resolver, blobs, directory, cache)` builds the `RemoteDelivery`
the scheduler hands leased recipients to, with the app's hooks: `dkim_signer` (the active key of the
From domain when it is an accepted domain of the sending tenant, else None: mail is never signed with
another tenant's key), `remote_domain` (`Directory.remote_domain_for`: the tenant's remote domain that covers
the destination, read at once so an administrator's change applies to the next delivery; the agent
asks once per tenant per call) and `hosted_here` (a destination another tenant of this service hosts:
its MX is this service, which is then no loop), which asks the node's directory cache (the MX
endpoint's) since the scheduler asks it for every batch, and `arc_sealer`: a message that carries the
node's own Authentication-Results came from outside and was authenticated here, so one that leaves
again is a forward (mailbox forwarding, a contact or a member of another organization), and it leaves
sealed (ARC, RFC 8617) with the forwarding tenant's key (`Directory.arc_sealing_key`): the next hop
can trust what we saw before anything changed it. Not sealed: a message From one of the tenant's own
domains (mail its on-premises server relays, hybrid 4; a colleague's message a mailbox forwards out):
the tenant's DKIM signature on it is aligned with its From, so DMARC passes at the next hop without a
seal, and the seal's two signatures were a quarter of a relayed message's CPU. A seal that cannot be
made is logged and the message goes unsealed.

`outbound_connector` answers an outbound connector by id as the database holds it now
(`Directory.outbound_connector_by_id`), so a connector edited, disabled or removed while
mail waited applies to the next attempt (the agent then delivers by MX). All the hooks are called by
the agent from a worker thread, never on the event loop.

The signing keys (`dkim_signer`, `arc_sealer`) are read from the directory at most once per
`SIGNING_KEY_SECONDS` per tenant and domain (`SigningKeys`): the key lookups are several queries, and
the agent asks per batch and, for the seal, per message (it was a tenth of a relay's CPU). A rotated
or removed key is so in force within that time; mail in flight is signed by the key published before.

`local_endpoints(settings)` is what counts as this service (its names, addresses and listeners): the
agent never delivers to itself through an MX or a connector's smart host; connector validation
(`postroom connector validate`) uses the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from email.utils import parseaddr
from functools import partial

from postroom.config import Settings
from postroom.delivery.remote import LocalEndpoints, RemoteDelivery, Sealer
from postroom.directory import CachedDirectory, Directory
from postroom.directory.errors import NotFoundError
from postroom.dns import Resolver
from postroom.dns.mta_sts_cache import StsPolicyCache
from postroom.model.message import summarize
from postroom.model.outbound import DkimSigner
from postroom.model.scope import TenantScope
from postroom.protection.arc import NotSealed, arc_seal
from postroom.protection.authentication import carries_results
from postroom.storage import BlobStore

log = logging.getLogger(__name__)


def authserv_id(settings: Settings) -> str:
    """The node's Authentication-Results authserv-id: `[protection] authserv_id`, else its host name."""
    return settings.protection.authserv_id or settings.service.hostname


SIGNING_KEY_SECONDS = 30.0  # how long a tenant's signing key, once read, is used without asking again
MAX_SIGNING_KEYS = 10_000  # keys held; the table is emptied when full


class SigningKeys:
    """The directory's signing-key answers, kept `SIGNING_KEY_SECONDS` (see the module docstring);
    safe to use from the agent's worker threads."""

    def __init__(self, directory: Directory, clock: Callable[[], float] = time.monotonic) -> None:
        self._directory = directory
        self._clock = clock
        self._held: dict[tuple[str, int, str], tuple[float, DkimSigner | None]] = {}
        self._lock = threading.Lock()

    def dkim(self, tenant_id: int, from_domain: str) -> DkimSigner | None:
        return self._recent(
            ("dkim", tenant_id, from_domain), lambda: _dkim_key(self._directory, tenant_id, from_domain)
        )

    def arc(self, tenant_id: int) -> DkimSigner | None:
        return self._recent(
            ("arc", tenant_id, ""), lambda: self._directory.arc_sealing_key(TenantScope(tenant_id))
        )

    def _recent(self, key: tuple[str, int, str], read: Callable[[], DkimSigner | None]) -> DkimSigner | None:
        now = self._clock()
        held = self._held.get(key)
        if held is not None and now - held[0] < SIGNING_KEY_SECONDS:
            return held[1]
        found = read()
        with self._lock:
            if len(self._held) >= MAX_SIGNING_KEYS:
                self._held.clear()
            self._held[key] = (now, found)
        return found


def _dkim_key(directory: Directory, tenant_id: int, from_domain: str) -> DkimSigner | None:
    try:
        selector, pem = directory.dkim_signing_key(TenantScope(tenant_id), from_domain)
    except NotFoundError:
        return None
    return DkimSigner(from_domain.lower(), selector, pem)


def dkim_signer(keys: SigningKeys, tenant_id: int | None, from_domain: str) -> DkimSigner | None:
    """The key `from_domain` signs with, when it is an accepted domain of tenant `tenant_id`."""
    if tenant_id is None or not from_domain:
        return None
    return keys.dkim(tenant_id, from_domain.lower())


def arc_sealer(keys: SigningKeys, authserv_id: str, tenant_id: int | None, head: bytes) -> Sealer | None:
    """The tenant's ARC seal for a message it forwards from outside (see the module docstring)."""
    if tenant_id is None or not carries_results(head, authserv_id):
        return None
    from_domain = parseaddr(summarize(head).from_header)[1].rpartition("@")[2].lower()
    if from_domain and keys.dkim(tenant_id, from_domain) is not None:
        return (
            None  # the tenant's own mail (its on-premises server's): its aligned DKIM signature says it all
        )
    key = keys.arc(tenant_id)
    if key is None:
        return None
    return partial(_seal, key, authserv_id)


def _seal(key: DkimSigner, authserv_id: str, content: bytes) -> bytes:
    try:
        return arc_seal(
            content,
            None,
            domain=key.domain,
            selector=key.selector,
            private_key=key.private_key_pem.encode("ascii"),
            authserv_id=authserv_id,
            now=time.time(),
        )
    except NotSealed as error:
        log.warning("forwarded message sent without an ARC seal of %s: %s", key.domain, error.reason)
        return b""


def hosted_here(cache: CachedDirectory, destination: str) -> bool:
    """Whether `destination` is a verified accepted domain of some tenant here (mail to it from another
    tenant goes out and comes back in through this service's MX)."""
    domain = cache.domain(destination)
    return domain is not None and domain.receives_mail


def local_endpoints(settings: Settings) -> LocalEndpoints:
    """What counts as this service: its host name, its MX hosts' suffix, its public addresses and the
    sockets its SMTP listeners are bound to."""
    service = settings.service
    return LocalEndpoints(
        names=frozenset({service.hostname.lower()}),
        name_suffixes=(service.mx_host_suffix.lower(),),
        addresses=frozenset(service.addresses),
        sockets=frozenset((a.host, a.port) for a in (*settings.mx.listen, *settings.submission.listen)),
    )


def helo_name(settings: Settings) -> str:
    """The name the node says in EHLO: `[delivery] helo_name`, else its host name."""
    return settings.delivery.helo_name or settings.service.hostname


def remote_delivery(
    settings: Settings,
    resolver: Resolver,
    blobs: BlobStore,
    directory: Directory,
    cache: CachedDirectory,
) -> RemoteDelivery:
    """The node's remote delivery agent."""
    keys = SigningKeys(directory)
    return RemoteDelivery(
        settings.delivery,
        resolver,
        blobs,
        helo_name=helo_name(settings),
        max_hops=settings.routing.max_hops,
        local=local_endpoints(settings),
        dkim_signer=partial(dkim_signer, keys),
        arc_sealer=partial(arc_sealer, keys, authserv_id(settings)),
        hosted_here=partial(hosted_here, cache),
        remote_domain=directory.remote_domain_for,
        sts=StsPolicyCache.from_settings(settings.mta_sts),
        outbound_connector=directory.outbound_connector_by_id,
    )
