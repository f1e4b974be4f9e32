"""What the MX session keeps of the connection filter for the rest of the stack: the service-wide
verdict on the session (`connection_verdict`) and each tenant's on the envelope (`tenant_listing`),
driven command by command over the real directory, writer and a blocklist on the loopback DNS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from postroom.app.mx import MxEndpoint, MxSession
from postroom.directory import CachedDirectory
from postroom.dns import DnsResolver
from postroom.model import Address
from postroom.model.ipfilter import Blocklist, IpList
from postroom.model.scope import OPERATOR
from postroom.model.verdicts import ConnectionVerdict, IpListing
from postroom.protection import ConnectionFilter, RateLimits
from postroom.smtp import ConnectionInfo, MailParams, RcptParams
from postroom.storage import FileBlobStore, GroupCommitter
from postroom.trace.refusals import RefusalLimits
from tests.conftest import Hosted
from tests.support.connection_policy import set_connection_policy
from tests.support.dns_server import DnsTestServer


@dataclass
class Mx:
    endpoint: MxEndpoint
    contoso: int
    fabrikam: int


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer({"bl.test": "9.0.0.127 IN A 127.0.0.2\n"}) as server:
        yield server


@pytest.fixture
async def mx(hosted: Hosted, dns: DnsTestServer) -> AsyncIterator[Mx]:
    app = hosted.app
    set_connection_policy(app, "contoso", ip_allow=["127.0.0.9"])
    committer = GroupCommitter(app.database)
    committer.start()
    endpoint = MxEndpoint(
        hostname="mx.postroom.test",
        directory=CachedDirectory(app.database),
        database=app.database,
        blobs=FileBlobStore(hosted.settings.blob_dir),
        committer=committer,
        on_queued=lambda: None,
        max_expanded_recipients=10_000,
        max_receive_size=37_748_736,
        refusal_limits=RefusalLimits(per_session=20, per_client=100, window=3600.0),
        connection_filter=ConnectionFilter(
            allow=IpList.parse(["127.0.0.5"]),
            blocklists=[Blocklist.parse("bl.test")],
            resolver=DnsResolver(dns.settings()),
            rates=RateLimits(connections_per_minute=100, messages_per_minute=100, max_clients=100),
        ),
    )
    try:
        yield Mx(
            endpoint,
            app.directory.get_tenant(OPERATOR, "contoso").id,
            app.directory.get_tenant(OPERATOR, "fabrikam").id,
        )
    finally:
        await asyncio.to_thread(committer.stop)
        endpoint.close()


async def session(mx: Mx, client: str) -> MxSession:
    info = ConnectionInfo(client, 40000, "127.0.0.1", 25, "mx", f"{client}/32")
    opened = mx.endpoint.session(info)
    assert await opened.connect() is None
    assert (await opened.mail_from(Address.parse("news@partner.example"), MailParams())).code == 250
    return opened


async def rcpt(opened: MxSession, recipient: str) -> int:
    return (await opened.rcpt_to(Address.parse(recipient), RcptParams())).code


async def test_a_client_on_no_list_is_not_listed_for_every_tenant(mx: Mx) -> None:
    opened = await session(mx, "127.0.0.7")
    assert [await rcpt(opened, "bob@contoso.com"), await rcpt(opened, "carol@fabrikam.com")] == [250, 250]
    assert opened.connection_verdict == ConnectionVerdict()
    assert opened.envelope is not None
    assert opened.envelope.tenant_listing == {
        mx.contoso: ConnectionVerdict(),
        mx.fabrikam: ConnectionVerdict(),
    }
    opened.close()


async def test_a_service_allow_is_the_session_verdict_and_every_tenants(mx: Mx) -> None:
    opened = await session(mx, "127.0.0.5")
    allowed = ConnectionVerdict(IpListing.ALLOWED, "service", "127.0.0.5")
    assert opened.connection_verdict == allowed
    assert await rcpt(opened, "carol@fabrikam.com") == 250
    assert opened.envelope is not None and opened.envelope.tenant_listing == {mx.fabrikam: allowed}
    opened.close()


async def test_a_blocklisted_client_a_tenant_allows(mx: Mx) -> None:
    opened = await session(mx, "127.0.0.9")
    assert opened.connection_verdict == ConnectionVerdict(), "the blocklists answer by the first RCPT"
    assert [await rcpt(opened, "bob@contoso.com"), await rcpt(opened, "carol@fabrikam.com")] == [250, 550]
    assert opened.connection_verdict == ConnectionVerdict(IpListing.BLOCKED, "dnsbl:bl.test", "127.0.0.2")
    assert opened.envelope is not None
    assert opened.envelope.tenant_listing == {
        mx.contoso: ConnectionVerdict(IpListing.ALLOWED, f"tenant:{mx.contoso}", "127.0.0.9")
    }
    [refused] = opened.envelope.rejected
    assert (str(refused.recipient), refused.reason.value, refused.tenant_id) == (
        "carol@fabrikam.com",
        "blocklisted",
        mx.fabrikam,
    )
    opened.close()
