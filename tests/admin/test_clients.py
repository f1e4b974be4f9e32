"""Client set-up on a running node's admin listener: Thunderbird autoconfig and Outlook Autodiscover,
asked over real HTTP and read as a client reads them; hostile requests from a stranger."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.admin.clients import MAX_REQUEST_OCTETS, REQUEST_SCHEMA, RESPONSE_SCHEMA
from postroom.app import App
from postroom.config import load_settings
from postroom.model.scope import OPERATOR
from tests.admin.client import Reply, request
from tests.conftest import populate
from tests.support.node import RunningNode, make_node, running

AUTOCONFIG = "/mail/config-v1.1.xml"
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER = "/autodiscover/autodiscover.xml"
RESPONSE = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
ACCOUNT = f"{{{RESPONSE_SCHEMA}}}"

# The public names and ports behind the balancer ([clients]); the listeners are on loopback.
CLIENTS = """\
[clients]
imap_host = "imap.postroom.test"
imaps_port = 993
imap_port = 10143
submission_host = ""
submissions_port = 465
submission_port = 587
"""
IMAP = [("imap.postroom.test", 993, "SSL"), ("imap.postroom.test", 10143, "STARTTLS")]
SUBMISSION = [("mx.postroom.test", 465, "SSL"), ("mx.postroom.test", 587, "STARTTLS")]


@dataclass(frozen=True)
class Served:
    node: RunningNode
    port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One node for the module: `populate`'s contoso (contoso.com) and fabrikam (fabrikam.com verified,
    pending.example not), and gone.example, verified once and removed."""
    settings = make_node(Path(tmp_path_factory.mktemp("clients")))
    text = settings.source.read_text(encoding="utf-8")
    head, table, rest = text.partition("\n[clients]\n")
    assert table, "postroom init writes a [clients] table"
    _, next_table, tail = rest.partition("\n[")
    settings.source.write_text(head + "\n" + CLIENTS + next_table + tail, encoding="utf-8")
    settings = load_settings(settings.source)
    app = App.open(settings)
    populate(app)
    app.directory.add_domain(OPERATOR, "gone.example", "contoso", verified=True)
    app.directory.remove_domain(OPERATOR, "gone.example")
    app.close()
    with running(settings) as node:
        yield Served(node, node.address("admin")[1])


def autodiscover_request(address: str, schema: str = RESPONSE_SCHEMA) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{REQUEST_SCHEMA}"><Request>'
        f"<EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def thunderbird_servers(reply: Reply) -> tuple[str, list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(domain, incoming, outgoing) as Thunderbird reads a clientConfig document."""
    assert reply.status == 200 and reply.content_type == "application/xml"
    root = ElementTree.fromstring(reply.body)
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    [provider] = root.findall("emailProvider")

    def servers(kind: str) -> list[tuple[str, ...]]:
        return [
            (
                s.get("type") or "",
                s.findtext("hostname") or "",
                s.findtext("port") or "",
                s.findtext("socketType") or "",
                s.findtext("username") or "",
                s.findtext("authentication") or "",
            )
            for s in provider.findall(kind)
        ]

    return provider.findtext("domain") or "", servers("incomingServer"), servers("outgoingServer")


def outlook_protocols(reply: Reply) -> list[tuple[str, ...]]:
    """(type, server, port, encryption, login name) of each Protocol, as Outlook reads them."""
    assert reply.status == 200 and reply.content_type == "text/xml; charset=utf-8"
    root = ElementTree.fromstring(reply.body)
    assert root.tag == f"{RESPONSE}Autodiscover"
    account = root.find(f"{ACCOUNT}Response/{ACCOUNT}Account")
    assert account is not None
    assert (account.findtext(f"{ACCOUNT}AccountType"), account.findtext(f"{ACCOUNT}Action")) == (
        "email",
        "settings",
    )
    return [
        tuple(
            p.findtext(f"{ACCOUNT}{name}") or ""
            for name in ("Type", "Server", "Port", "Encryption", "LoginName")
        )
        for p in account.findall(f"{ACCOUNT}Protocol")
    ]


def test_thunderbird_finds_imap_and_submission_from_an_address(served: Served) -> None:
    reply = request(served.port, ["autoconfig.contoso.com"], f"{AUTOCONFIG}?emailaddress=alice%40contoso.com")
    domain, incoming, outgoing = thunderbird_servers(reply)
    assert domain == "contoso.com"
    template = ("%EMAILADDRESS%", "password-cleartext")
    assert incoming == [("imap", host, str(port), tls, *template) for host, port, tls in IMAP]
    assert outgoing == [("smtp", host, str(port), tls, *template) for host, port, tls in SUBMISSION]


def test_autoconfig_is_the_same_for_every_address_and_way_of_asking(served: Served) -> None:
    answers = {
        request(served.port, [host], path).body
        for host, path in [
            ("autoconfig.contoso.com", f"{AUTOCONFIG}?emailaddress=alice%40contoso.com"),
            ("autoconfig.contoso.com", f"{AUTOCONFIG}?emailaddress=nobody%40contoso.com"),
            ("autoconfig.contoso.com", f"{AUTOCONFIG}?EmailAddress=Bob%40CONTOSO.com"),
            ("autoconfig.contoso.com:443", AUTOCONFIG),
            ("contoso.com", WELL_KNOWN),
            ("contoso.com", f"{WELL_KNOWN}?emailaddress=someone%40contoso.com"),
        ]
    }
    assert len(answers) == 1


def test_a_second_tenants_domain_gets_its_own_answer(served: Served) -> None:
    by_host = request(served.port, ["autoconfig.fabrikam.com"], AUTOCONFIG)
    by_address = request(
        served.port, ["autoconfig.contoso.com"], f"{AUTOCONFIG}?emailaddress=carol%40fabrikam.com"
    )
    assert thunderbird_servers(by_host)[0] == thunderbird_servers(by_address)[0] == "fabrikam.com"
    assert by_host.body == by_address.body
    discovered = request(
        served.port,
        ["autodiscover.fabrikam.com"],
        AUTODISCOVER,
        method="POST",
        body=autodiscover_request("carol@fabrikam.com"),
    )
    assert {p[4] for p in outlook_protocols(discovered)} == {"carol@fabrikam.com"}


@pytest.mark.parametrize("path", [AUTODISCOVER, "/Autodiscover/Autodiscover.xml"])
def test_outlook_finds_imap_and_smtp_from_an_address(served: Served, path: str) -> None:
    reply = request(
        served.port,
        ["autodiscover.contoso.com"],
        path,
        method="POST",
        body=autodiscover_request("alice@contoso.com"),
    )
    assert outlook_protocols(reply) == [
        ("IMAP", host, str(port), "SSL" if tls == "SSL" else "TLS", "alice@contoso.com")
        for host, port, tls in IMAP
    ] + [
        ("SMTP", host, str(port), "SSL" if tls == "SSL" else "TLS", "alice@contoso.com")
        for host, port, tls in SUBMISSION
    ]


def test_autodiscover_does_not_tell_which_addresses_exist(served: Served) -> None:
    def asked(address: str) -> bytes:
        reply = request(
            served.port,
            ["autodiscover.contoso.com"],
            AUTODISCOVER,
            method="POST",
            body=autodiscover_request(address),
        )
        assert reply.status == 200
        return reply.body.replace(address.encode(), b"ADDRESS")

    assert asked("alice@contoso.com") == asked("nobody@contoso.com") == asked("al@contoso.com")
    by_get = request(
        served.port, ["autodiscover.contoso.com"], f"{AUTODISCOVER}?emailaddress=nobody%40contoso.com"
    )
    assert by_get.body.replace(b"nobody@contoso.com", b"ADDRESS") == asked("alice@contoso.com")


@pytest.mark.parametrize("domain", ["unknown.example", "pending.example", "gone.example", "postroom.test"])
def test_a_domain_not_served_gets_the_same_404_everywhere(served: Served, domain: str) -> None:
    replies = [
        request(served.port, [f"autoconfig.{domain}"], AUTOCONFIG),
        request(served.port, [domain], WELL_KNOWN),
        request(served.port, ["autoconfig.contoso.com"], f"{AUTOCONFIG}?emailaddress=alice%40{domain}"),
        request(
            served.port,
            [f"autodiscover.{domain}"],
            AUTODISCOVER,
            method="POST",
            body=autodiscover_request(f"alice@{domain}"),
        ),
        request(served.port, [f"autodiscover.{domain}"], f"{AUTODISCOVER}?emailaddress=alice%40{domain}"),
    ]
    unknown = request(served.port, ["autoconfig.unknown.example"], AUTOCONFIG)
    assert {(r.status, r.body) for r in replies} == {(404, unknown.body)}


def test_a_domain_removed_while_serving_is_no_longer_answered(served: Served) -> None:
    directory = served.node.app.directory
    directory.add_domain(OPERATOR, "leaving.example", "fabrikam", verified=True)
    before = request(served.port, ["autoconfig.leaving.example"], AUTOCONFIG)
    directory.remove_domain(OPERATOR, "leaving.example")
    after = request(served.port, ["autoconfig.leaving.example"], AUTOCONFIG)
    assert (before.status, after.status) == (200, 404)


def test_the_address_is_escaped_not_injected(served: Served) -> None:
    hostile = '"</LoginName><Server>evil.example</Server>&"@contoso.com'
    escaped = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    reply = request(
        served.port,
        ["autodiscover.contoso.com"],
        AUTODISCOVER,
        method="POST",
        body=autodiscover_request(escaped),
    )
    protocols = outlook_protocols(reply)  # parses: nothing was injected into the document
    assert {p[4] for p in protocols} == {hostile}
    assert {p[1] for p in protocols} == {"imap.postroom.test", "mx.postroom.test"}
    thunderbird = request(
        served.port, ["autoconfig.contoso.com"], f"{AUTOCONFIG}?emailaddress=%22%3Cx%3E%22%40contoso.com"
    )
    assert b"<x>" not in thunderbird.body and thunderbird_servers(thunderbird)[0] == "contoso.com"


def with_doctype(doctype: str, address: str) -> bytes:
    """An Autodiscover request with a document type declaration before it."""
    return f'<?xml version="1.0"?>\n{doctype}\n'.encode() + autodiscover_request(address).partition(b"\n")[2]


LAUGHS = "".join(f' <!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">\n' for n in range(2, 10))
BILLION_LAUGHS = with_doctype(f'<!DOCTYPE lolz [\n <!ENTITY lol1 "lol">\n{LAUGHS}]>', "&lol9;@contoso.com")
EXTERNAL_ENTITY = with_doctype(
    '<!DOCTYPE a [<!ENTITY secret SYSTEM "file:///etc/passwd">]>', "&secret;@contoso.com"
)
EXTERNAL_DTD = with_doctype(
    '<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:9/evil.dtd">', "alice@contoso.com"
)
PARAMETER_ENTITY = with_doctype(
    '<!DOCTYPE a [<!ENTITY % remote SYSTEM "file:///etc/passwd"> %remote;]>', "alice@contoso.com"
)
DEEP = "<Request>" * 40 + "</Request>" * 40


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(EXTERNAL_DTD, id="external-dtd"),
        pytest.param(PARAMETER_ENTITY, id="parameter-entity"),
        pytest.param(autodiscover_request("&undeclared;@contoso.com"), id="undeclared-entity"),
        pytest.param(
            b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006">'
            b"<Request><EMailAddress>alice@contoso.com</EMailAddress></Request></Autodiscover>",
            id="wrong-namespace",
        ),
        pytest.param(
            b"<Autodiscover><Request><EMailAddress>alice@contoso.com</EMailAddress></Request></Autodiscover>",
            id="no-namespace",
        ),
        pytest.param(
            autodiscover_request(
                "alice@contoso.com",
                "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006",
            ),
            id="activesync-schema",
        ),
        pytest.param(
            f'<Autodiscover xmlns="{REQUEST_SCHEMA}">{DEEP}</Autodiscover>'.encode(),
            id="deep-nesting",
        ),
        pytest.param(autodiscover_request("x" * 400 + "@contoso.com"), id="long-address"),
        pytest.param(autodiscover_request("not an address"), id="not-an-address"),
        pytest.param(
            f'<Autodiscover xmlns="{REQUEST_SCHEMA}"><Request/></Autodiscover>'.encode(), id="no-address"
        ),
        pytest.param(b"alice@contoso.com", id="not-xml"),
        pytest.param(b"", id="empty"),
    ],
)
def test_hostile_or_malformed_requests_get_400(served: Served, body: bytes) -> None:
    reply = request(served.port, ["autodiscover.contoso.com"], AUTODISCOVER, method="POST", body=body)
    assert reply.status == 400
    assert b"root:" not in reply.body and b"lol" not in reply.body


@pytest.mark.parametrize(
    "path",
    [
        f"{AUTOCONFIG}?emailaddress=a%40contoso.com&emailaddress=b%40contoso.com",
        f"{AUTOCONFIG}?emailaddress=no-at-sign",
        f"{AUTODISCOVER}?emailaddress=a%40contoso.com&EMAILADDRESS=b%40contoso.com",
        AUTODISCOVER,
    ],
)
def test_a_query_without_one_usable_address_gets_400(served: Served, path: str) -> None:
    assert request(served.port, ["autoconfig.contoso.com"], path).status == 400


def http_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send `head` (and `body`) on a raw socket; the status line of what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n")[0]


def test_a_body_over_the_bound_is_refused_before_it_is_read(served: Served) -> None:
    head = (
        f"POST {AUTODISCOVER} HTTP/1.1\r\nHost: autodiscover.contoso.com\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n"
    ).encode()
    assert http_exchange(served.port, head) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_chunked_body_over_the_bound_is_refused(served: Served) -> None:
    head = (
        f"POST {AUTODISCOVER} HTTP/1.1\r\nHost: autodiscover.contoso.com\r\n"
        "Content-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b" " * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(MAX_REQUEST_OCTETS // 4096 + 2))
    assert http_exchange(served.port, head, chunks + b"0\r\n\r\n") == b"HTTP/1.1 413 Request Entity Too Large"
