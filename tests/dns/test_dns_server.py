"""The test DNS server itself, asked with raw dnspython queries: what it answers and how it changes."""

from __future__ import annotations

import socket

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from support.dns_server import DnsTestServer


def ask(server: DnsTestServer, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=2)
    return dns.query.udp(query, server.host, port=server.port, timeout=2, ignore_trailing=True)


def texts(response: dns.message.Message) -> list[str]:
    """The answer section as sorted "name rdata" lines (an RRset is unordered)."""
    return sorted(f"{rrset.name} {rdata}" for rrset in response.answer for rdata in rrset)


def test_udp_and_tcp_share_one_port(dns_server: DnsTestServer) -> None:
    assert dns_server.port != 0
    assert dns_server.address.port == dns_server.port
    for tcp in (False, True):
        response = ask(dns_server, "example.com", "A", tcp=tcp)
        assert texts(response) == ["example.com. 192.0.2.10"]
        assert response.flags & dns.flags.AA
    assert [query.transport for query in dns_server.queries] == ["udp", "tcp"]


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "answer", "soa_ttl"),
    [
        ("missing.example.com", "A", dns.rcode.NXDOMAIN, [], 60),
        ("mx1.example.com", "MX", dns.rcode.NOERROR, [], 60),
        ("deep.example.com", "A", dns.rcode.NOERROR, [], 60),  # empty non-terminal
        ("example.org", "A", dns.rcode.REFUSED, [], None),
        (
            "mail.example.com",
            "A",
            dns.rcode.NOERROR,
            [
                "mail.example.com. mx1.example.com.",
                "mx1.example.com. 192.0.2.25",
                "mx1.example.com. 192.0.2.26",
            ],
            None,
        ),
        (
            "outside.example.com",
            "A",
            dns.rcode.NOERROR,
            ["outside.example.com. target.elsewhere.test."],
            None,
        ),
    ],
)
def test_answers(
    dns_server: DnsTestServer, name: str, rdtype: str, rcode: int, answer: list[str], soa_ttl: int | None
) -> None:
    response = ask(dns_server, name, rdtype)
    assert response.rcode() == rcode
    assert texts(response) == answer
    if soa_ttl is None:
        assert response.authority == []
    else:
        [soa] = response.authority
        assert (soa.rdtype, soa.ttl) == (dns.rdatatype.SOA, soa_ttl)


def test_big_udp_answers_are_truncated_and_tcp_ones_are_not(dns_server: DnsTestServer) -> None:
    for i in range(10):
        dns_server.add_txt("big.example.com", "x" * 100, f"{i}")
    udp = ask(dns_server, "big.example.com", "TXT")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = ask(dns_server, "big.example.com", "TXT", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 10


def test_edns_payload_is_honoured(dns_server: DnsTestServer) -> None:
    for i in range(10):
        dns_server.add_txt("big.example.com", "x" * 100, f"{i}")
    query = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=4096)
    response = dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=2)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 10


@pytest.mark.parametrize(
    ("oversize", "lengths"),
    [("split", [255, 45]), ("truncate", [255])],
)
def test_oversize_txt_strings_are_split_or_cut(
    dns_server: DnsTestServer, oversize: str, lengths: list[int]
) -> None:
    dns_server.add_txt("long.example.com", "a" * 300, oversize=oversize)  # type: ignore[arg-type]
    [rrset] = ask(dns_server, "long.example.com", "TXT").answer
    [rdata] = rrset
    assert [len(string) for string in rdata.strings] == lengths


def test_oversize_txt_strings_can_be_refused(dns_server: DnsTestServer) -> None:
    with pytest.raises(ValueError, match="300 octets"):
        dns_server.add_txt("long.example.com", "a" * 300, oversize="reject")


def test_zone_text_holds_only_conforming_strings(dns_server: DnsTestServer) -> None:
    with pytest.raises(dns.exception.SyntaxError):
        dns_server.set_zone("long.test", f'@ IN TXT "{"a" * 300}"\n')
    dns_server.set_zone("long.test", f'@ IN TXT "{"a" * 255}" "{"b" * 45}"\n')
    [rrset] = ask(dns_server, "long.test", "TXT", tcp=True).answer
    assert [len(string) for string in next(iter(rrset)).strings] == [255, 45]


def test_data_changes_while_running(dns_server: DnsTestServer) -> None:
    assert ask(dns_server, "_verify.example.com", "TXT").rcode() == dns.rcode.NXDOMAIN
    dns_server.add_txt("_verify.example.com", "token=1")
    assert texts(ask(dns_server, "_verify.example.com", "TXT")) == ['_verify.example.com. "token=1"']
    dns_server.add_records("example.com", "MX", "30 backup.example.net.", ttl=60)
    assert len(ask(dns_server, "example.com", "MX").answer[0]) == 3
    dns_server.remove_records("example.com", "MX")
    assert ask(dns_server, "example.com", "MX").answer == []
    dns_server.remove_records("_verify.example.com")
    assert ask(dns_server, "_verify.example.com", "TXT").rcode() == dns.rcode.NXDOMAIN


def test_zones_are_replaced_and_removed(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("example.com", "@ IN A 198.51.100.1\n")
    assert texts(ask(dns_server, "example.com", "A")) == ["example.com. 198.51.100.1"]
    assert ask(dns_server, "www.example.com", "A").rcode() == dns.rcode.NXDOMAIN
    dns_server.remove_zone("example.com")
    assert ask(dns_server, "example.com", "A").rcode() == dns.rcode.REFUSED


def test_the_longest_zone_wins(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("sub.example.com", "host IN A 198.51.100.7\n")
    assert texts(ask(dns_server, "host.sub.example.com", "A")) == ["host.sub.example.com. 198.51.100.7"]
    [soa] = ask(dns_server, "nothing.sub.example.com", "A").authority
    assert str(soa.name) == "sub.example.com."


def test_records_outside_every_zone_are_refused(dns_server: DnsTestServer) -> None:
    with pytest.raises(ValueError, match="in no zone"):
        dns_server.add_records("example.org", "A", "192.0.2.1")


def test_forced_failures(dns_server: DnsTestServer) -> None:
    dns_server.set_failure("example.com")
    assert ask(dns_server, "example.com", "A").rcode() == dns.rcode.SERVFAIL
    dns_server.set_failure("example.com", None)
    assert ask(dns_server, "example.com", "A").rcode() == dns.rcode.NOERROR


def test_garbage_gets_formerr_and_short_garbage_nothing(dns_server: DnsTestServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\x12\x34" + b"\xff" * 20, (dns_server.host, dns_server.port))
        reply, _ = sock.recvfrom(512)
        assert reply[:2] == b"\x12\x34"
        assert reply[3] & 0x0F == dns.rcode.FORMERR
        sock.sendto(b"\x00", (dns_server.host, dns_server.port))
        with pytest.raises(TimeoutError):
            sock.settimeout(0.2)
            sock.recvfrom(512)


def test_server_restarts_on_a_fresh_port() -> None:
    server = DnsTestServer({"example.com": "@ IN A 192.0.2.1\n"})
    with server:
        assert ask(server, "example.com", "A").rcode() == dns.rcode.NOERROR
    with pytest.raises(OSError):
        ask(server, "example.com", "A", tcp=True)
    with server:
        assert ask(server, "example.com", "A").rcode() == dns.rcode.NOERROR


def test_a_wildcard_answers_for_names_that_do_not_exist_below_its_encloser() -> None:
    zone = "*.mail IN A 192.0.2.25\nhost.mail IN AAAA 2001:db8::25\n"
    with DnsTestServer({"wild.test": zone}) as server:
        assert texts(ask(server, "a-b.mail.wild.test", "A")) == ["a-b.mail.wild.test. 192.0.2.25"]
        assert texts(ask(server, "x.y.mail.wild.test", "A")) == ["x.y.mail.wild.test. 192.0.2.25"]
        existing = ask(server, "host.mail.wild.test", "A")  # the name exists: no synthesis
        assert (texts(existing), existing.rcode()) == ([], dns.rcode.NOERROR)
        assert ask(server, "other.wild.test", "A").rcode() == dns.rcode.NXDOMAIN
        assert ask(server, "a.host.mail.wild.test", "A").rcode() == dns.rcode.NXDOMAIN  # encloser host


def test_ad_is_set_for_chosen_names_only_when_asked(dns_server: DnsTestServer) -> None:
    dns_server.set_authenticated("example.com")

    def ad(name: str, *, want: bool) -> bool:
        query = dns.message.make_query(name, "A", want_dnssec=want)
        if not want:
            query.flags &= ~dns.flags.AD
        response = dns.query.udp(query, "127.0.0.1", port=dns_server.port, timeout=2)
        return bool(response.flags & dns.flags.AD)

    assert ad("example.com", want=True)
    assert not ad("example.com", want=False)  # a client that does not ask never gets AD
    assert not ad("mx1.example.com", want=True)  # another name
    dns_server.set_authenticated("example.com", False)
    assert not ad("example.com", want=True)
