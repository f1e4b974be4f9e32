"""The DNS set-up round trip, as an admin does it: the records Postroom prints are published, checked,
and come back with zero errors.

`postroom domain records --zone` and `postroom service records --zone` go into a real DNS server on
loopback, the domain is verified through it, a running node serves the MTA-STS policy on its admin
listener, and `postroom domain check` fetches that policy and reads every record back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from pathlib import Path

from postroom.app.domain_dns import CHECK_CONCURRENCY, check_domains_dns
from postroom.config.settings import DnsSettings, ListenAddress
from postroom.dns import DnsResolver
from postroom.model.scope import OPERATOR
from tests.cli.test_commands import postroom
from tests.support.dns_server import DnsTestServer, silent_nameserver
from tests.support.node import make_node, running
from tests.support.records import new_directory, open_database


def test_published_records_check_with_zero_errors(tmp_path: Path) -> None:
    with DnsTestServer() as dns_server:
        settings = make_node(tmp_path / "node", nameservers=(str(dns_server.address),))
        config = settings.source
        config.write_text(config.read_text().replace("addresses = []", 'addresses = ["127.0.0.1"]'))
        assert postroom("tenant", "add", "contoso", config=config).returncode == 0
        assert (
            postroom("domain", "add", "contoso.example", "--tenant", "contoso", config=config).returncode == 0
        )

        service_zone = postroom("service", "records", "--zone", config=config)
        domain_zone = postroom("domain", "records", "contoso.example", "--zone", config=config)
        assert service_zone.returncode == domain_zone.returncode == 0
        # The wildcard for every MX host is in the service zone; the test server serves no wildcards.
        mx_host = json.loads(postroom("domain", "show", "contoso.example", "--json", config=config).stdout)[
            "mx_host"
        ]
        dns_server.set_zone("postroom.test", service_zone.stdout + f"{mx_host}. 3600 IN A 127.0.0.1\n")
        dns_server.set_zone("contoso.example", domain_zone.stdout)

        pending = postroom("domain", "check", "contoso.example", "--json", config=config)
        assert [f["code"] for f in json.loads(pending.stdout)["findings"]][:1] == ["ownership.ok"]
        assert postroom("domain", "verify", "contoso.example", config=config).returncode == 0

        with running(settings) as node:
            _, admin_port = node.address("admin")
            checked = postroom(
                "domain",
                "check",
                "contoso.example",
                "--json",
                "--mta-sts-http",
                "--mta-sts-port",
                str(admin_port),
                config=config,
            )
        report = json.loads(checked.stdout)
        assert checked.returncode == 0, checked.stdout
        assert (report["errors"], report["warnings"]) == (0, 0), report["findings"]
        assert {f["code"] for f in report["findings"]} == {
            "mx.ok",
            "spf.ok",
            "dkim.ok",
            "dmarc.ok",
            "client-setup.ok",
            "mta-sts.ok",
            "tls-rpt.ok",
        }

        # A customer then adds a second SPF record for a newsletter service: the check catches it.
        dns_server.add_txt("contoso.example", "v=spf1 include:newsletters.example ~all")
        broken = postroom("domain", "check", "contoso.example", "--json", config=config)
        assert broken.returncode == 1
        [multiple] = [f for f in json.loads(broken.stdout)["findings"] if f["code"] == "spf.multiple"]
        assert multiple["publish"][0]["value"] == (
            "v=spf1 include:newsletters.example include:spf.protection.postroom.test -all"
        )


def test_a_stored_ip_literal_is_refused_by_records_and_one_finding_in_check(tmp_path: Path) -> None:
    with silent_nameserver() as nameserver:
        settings = make_node(tmp_path / "node", nameservers=(str(nameserver),))
        config = settings.source
        assert postroom("tenant", "add", "contoso", config=config).returncode == 0
        assert postroom("domain", "add", "old.example", "--tenant", "contoso", config=config).returncode == 0
        # A database from before `domain add` refused IP literals still holds one.
        with sqlite3.connect(tmp_path / "node" / "postroom.db") as db:
            db.execute(
                "UPDATE domains SET name = '[192.0.2.1]', domain_key = '[192-0-2-1]' "
                "WHERE name = 'old.example'"
            )
        records = postroom("domain", "records", "[192.0.2.1]", config=config)
        assert records.returncode == 1
        assert "is an IP address" in records.stderr and "Traceback" not in records.stderr
        checked = postroom("domain", "check", "[192.0.2.1]", "--json", config=config)
        assert checked.returncode == 1, checked.stderr
        assert [f["code"] for f in json.loads(checked.stdout)["findings"]] == ["domain.not-a-domain"]


def test_a_node_that_publishes_what_it_prints_checks_every_domain_clean(tmp_path: Path) -> None:
    """`domain check` without a domain, after publishing exactly `service records --zone` and every
    `domain records --zone`: the tenants' default domains too, whose records live in the service zone."""
    with DnsTestServer() as dns_server:
        settings = make_node(tmp_path / "node", nameservers=(str(dns_server.address),))
        config = settings.source
        config.write_text(config.read_text().replace("addresses = []", 'addresses = ["127.0.0.1"]'))
        for tenant, domain in (("contoso", "contoso.example"), ("fabrikam", "fabrikam.example")):
            assert postroom("tenant", "add", tenant, config=config).returncode == 0
            added = postroom("domain", "add", domain, "--tenant", tenant, "--verified", config=config)
            assert added.returncode == 0, added.stderr
        domains = json.loads(postroom("domain", "list", "--json", config=config).stdout)
        assert {d["name"] for d in domains if d["is_default"]} == {
            "contoso.postroom.test",
            "fabrikam.postroom.test",
        }

        zones: dict[str, str] = {
            "postroom.test": postroom("service", "records", "--zone", config=config).stdout
        }
        for domain in domains:
            printed = postroom("domain", "records", domain["name"], "--zone", config=config)
            assert printed.returncode == 0, printed.stderr
            origin = "postroom.test" if domain["is_default"] else domain["name"]
            zones[origin] = zones.get(origin, "") + printed.stdout
        for origin, text in zones.items():
            dns_server.set_zone(origin, text)

        with running(settings) as node:
            _, admin_port = node.address("admin")
            checked = postroom(
                "domain",
                "check",
                "--json",
                "--mta-sts-http",
                "--mta-sts-port",
                str(admin_port),
                config=config,
            )
        reports = json.loads(checked.stdout)
        assert checked.returncode == 0, checked.stdout
        assert {r["domain"] for r in reports} == {d["name"] for d in domains}
        for report in reports:
            assert (report["errors"], report["warnings"]) == (0, 0), report


async def test_a_sweep_stops_asking_a_nameserver_that_does_not_answer(tmp_path: Path) -> None:
    settings = make_node(tmp_path / "node")
    directory = new_directory(open_database(tmp_path))
    directory.add_tenant(OPERATOR, "contoso")
    names = [f"d{number}.example" for number in range(2 * CHECK_CONCURRENCY)]
    for name in names:
        directory.add_domain(OPERATOR, name, "contoso", verified=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # receives, never answers
        silent.bind(("127.0.0.1", 0))
        nameserver = ListenAddress("127.0.0.1", silent.getsockname()[1])
        resolver = DnsResolver(DnsSettings(nameservers=(nameserver,), timeout=0.5))
        diagnoses = await check_domains_dns(directory, settings, resolver, names)
        silent.setblocking(False)
        queries = 0
        with contextlib.suppress(BlockingIOError):
            while silent.recv(4096):
                queries += 1
    assert [d.domain for d in diagnoses] == names
    assert all(d.codes() == ["dns.unavailable"] for d in diagnoses)
    assert 1 <= queries <= CHECK_CONCURRENCY  # the domains in flight asked once each; the rest not at all
    assert "not checked: no nameserver answered" in diagnoses[-1].findings[0].message
