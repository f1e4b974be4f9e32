"""The admin listener in a running node: `App.serve` starts it beside the MX endpoint, reports it, serves
the verified domains' MTA-STS policies over HTTP or HTTPS, and stops it in the drain."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

from postroom.app import App, Listening, StartupError
from postroom.dns import DnsResolver
from postroom.dns.mta_sts import fetch_sts_policy, parse_sts_policy
from postroom.model.scope import OPERATOR
from tests.admin.client import request
from tests.conftest import Hosted
from tests.support.dns_server import DnsTestServer
from tests.support.node import RunningNode, running


def admin_of(node: RunningNode) -> Listening:
    [admin] = [item for item in node.listening if item.name == "admin"]
    return admin


def port_of(listening: Listening) -> int:
    return int(listening.address.rpartition(":")[2])


def test_the_node_serves_policies_of_verified_domains_and_404s_the_rest(hosted: Hosted) -> None:
    domain_key = hosted.app.directory.get_domain(OPERATOR, "contoso.com").domain_key
    with running(hosted.settings) as node:
        admin = admin_of(node)
        assert admin.protocol == "HTTP" and admin.address.startswith("127.0.0.1:")
        port = port_of(admin)
        served = request(port, ["mta-sts.contoso.com"])
        unknown = request(port, ["mta-sts.unknown.example"])
        unverified = request(port, ["mta-sts.pending.example"])
        bad = request(port, ["mta-sts.contoso.com/../x"])
    assert (served.status, served.content_type) == (200, "text/plain; charset=utf-8")
    policy = parse_sts_policy(served.body.decode())
    assert policy.matches(hosted.settings.service.mx_host(domain_key))
    assert (unknown.status, unverified.status, bad.status) == (404, 404, 400)
    with pytest.raises(ConnectionRefusedError):
        request(port, ["mta-sts.contoso.com"])  # stopped with the node


async def test_a_sender_fetches_the_policy_from_the_node(hosted: Hosted) -> None:
    with DnsTestServer({"contoso.com": "mta-sts IN A 127.0.0.1\n"}) as dns, running(hosted.settings) as node:
        port = port_of(admin_of(node))
        fetched = await fetch_sts_policy(
            DnsResolver(dns.settings()), "contoso.com", port=port, ssl_context=None
        )
    assert fetched.error is None and fetched.policy is not None
    assert fetched.policy.mode == hosted.settings.service.mta_sts_mode


def test_admin_tls_serves_https_with_the_node_certificate(hosted: Hosted) -> None:
    settings = dataclasses.replace(
        hosted.settings, admin=dataclasses.replace(hosted.settings.admin, tls=True)
    )
    with running(settings) as node:
        admin = admin_of(node)
        client = ssl.create_default_context(cafile=str(settings.tls.certificate))  # init's, with 127.0.0.1
        served = request(port_of(admin), ["mta-sts.contoso.com"], context=client)
    assert admin.protocol == "HTTPS"
    assert served.status == 200


async def test_a_missing_certificate_refuses_to_start(hosted: Hosted) -> None:
    hosted.settings.tls.certificate.unlink()
    app = App(hosted.settings, hosted.app.database)
    with pytest.raises(StartupError, match=r"^\[tls\] certificate: there is no file .*cert.pem; point"):
        await app.serve()
