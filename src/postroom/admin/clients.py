"""Client set-up on the admin listener: a mail client finds its IMAP and submission servers from an
address alone, by Thunderbird autoconfig or Outlook Autodiscover (POX).

| method   | path                                            | asked by                              |
|----------|-------------------------------------------------|---------------------------------------|
| GET      | `/.well-known/autoconfig/mail/config-v1.1.xml`  | Thunderbird, at the domain itself     |
| GET      | `/mail/config-v1.1.xml`                         | Thunderbird, at `autoconfig.<domain>` |
| POST/GET | `/autodiscover/autodiscover.xml`                | Outlook, at `autodiscover.<domain>`   |
| POST/GET | `/Autodiscover/Autodiscover.xml`                | the same, as Outlook capitalises it   |

Autoconfig takes the domain from `?emailaddress=` when given, else from the Host header (less an
`autoconfig.` prefix), and answers `clientConfig` 1.1: IMAP over implicit TLS then STARTTLS, SMTP
submission over implicit TLS then STARTTLS, user name `%EMAILADDRESS%`, password authentication.
Autodiscover takes the address from the request's `EMailAddress` (POST, the
`outlook/requestschema/2006` request) or from `?emailaddress=` (GET), and answers the
`outlook/responseschema/2006a` Account with the same servers as `IMAP` and `SMTP` protocols, the
address itself as `LoginName`. The servers are `[clients]` (`ClientServers.from_settings`): the
public names and ports, which behind a balancer are not the listeners' own.

Answers are given for a verified accepted domain of any tenant (`ClientSetup.serves`, one indexed
read in a worker thread, as the MTA-STS lookups). Any other domain, unknown, pending or removed, gets
`404` with the same body; a request without a usable address or domain gets `400`.

*Security:* every request is untrusted network input. The answer depends on the domain alone: the
directory is never asked whether an address exists, so every address of a served domain gets the same
servers (Autodiscover's `LoginName` is the address the client sent) and nothing tells a stranger
which mailboxes there are. Everything taken from the request that is written back (the address, the
domain) has been parsed as an address or domain first and is XML-escaped. An Autodiscover body is
bounded (`MAX_REQUEST_OCTETS`: a larger `Content-Length` is refused before reading, a longer body as
soon as it passes the bound; `413`) and parsed by the standard library's expat with defusedxml's
defences written out: a document type declaration of any kind is refused (so no entity can be
declared: no billion laughs, no external entity, no external DTD), entity references other than the
five predefined ones are errors, and element depth and text are bounded. That is the whole of what
defusedxml would add here, three handlers on the same parser; it is not a dependency of the project
and is not worth one for them. `xml.etree` never parses request bodies. Each request costs that
bounded parse and at most one indexed read; the listener's `[admin.limits]` bound how many a client
address can have open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn
from xml.parsers import expat
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from postroom.config.settings import ClientSettings, ServiceSettings
from postroom.model.address import Address, AddressError, normalize_domain

AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
AUTOCONFIG_PREFIX = "autoconfig."
REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTODISCOVER_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
MAX_REQUEST_OCTETS = 8192  # an Autodiscover request is a few hundred octets
MAX_DEPTH = 8  # elements nested in an Autodiscover request (it needs 3)
MAX_ADDRESS_CHARACTERS = 320  # text of EMailAddress (RFC 5321: 64 + 1 + 255)

_REQUEST_PATH = [f"{REQUEST_SCHEMA} Autodiscover", f"{REQUEST_SCHEMA} Request"]
XML = "application/xml"
_NOT_SERVED = "no mail client settings for that domain here\n"

Security = Literal["SSL", "STARTTLS"]  # implicit TLS, or STARTTLS on a plain connection


@dataclass(frozen=True, slots=True)
class MailServer:
    """One server as a client is told it: its public name, port, and how TLS starts."""

    host: str
    port: int
    security: Security


@dataclass(frozen=True, slots=True)
class ClientServers:
    """The servers clients are told, each kind in the order of preference."""

    imap: tuple[MailServer, ...]
    submission: tuple[MailServer, ...]

    @classmethod
    def from_settings(cls, service: ServiceSettings, clients: ClientSettings) -> ClientServers:
        imap_host = clients.imap_host or service.hostname
        submission_host = clients.submission_host or service.hostname

        def offered(host: str, tls_port: int, starttls_port: int) -> tuple[MailServer, ...]:
            servers = (MailServer(host, tls_port, "SSL"), MailServer(host, starttls_port, "STARTTLS"))
            return tuple(server for server in servers if server.port)

        return cls(
            imap=offered(imap_host, clients.imaps_port, clients.imap_port),
            submission=offered(submission_host, clients.submissions_port, clients.submission_port),
        )


@dataclass(frozen=True, slots=True)
class ClientSetup:
    """What the routes need: the servers, and whether a domain (A-label, lower case) is served here.
    `serves` reads the directory; it is run in a worker thread."""

    servers: ClientServers
    serves: Callable[[str], bool]


class BadRequest(ValueError):
    """The request names no usable address; the message says what the client should send."""


class _TooLarge(Exception):
    """The request body is over `MAX_REQUEST_OCTETS`."""


def autoconfig_xml(servers: ClientServers, domain: str) -> str:
    """The Thunderbird `clientConfig` 1.1 document for `domain` (an A-label the directory holds)."""
    name = escape(domain, {'"': "&quot;"})

    def server(element: str, kind: str, one: MailServer) -> str:
        return (
            f'    <{element} type="{kind}">\n'
            f"      <hostname>{escape(one.host)}</hostname>\n"
            f"      <port>{one.port}</port>\n"
            f"      <socketType>{one.security}</socketType>\n"
            "      <authentication>password-cleartext</authentication>\n"
            "      <username>%EMAILADDRESS%</username>\n"
            f"    </{element}>\n"
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{name}">\n'
        f"    <domain>{name}</domain>\n"
        f"    <displayName>{name}</displayName>\n"
        f"    <displayShortName>{name}</displayShortName>\n"
        + "".join(server("incomingServer", "imap", one) for one in servers.imap)
        + "".join(server("outgoingServer", "smtp", one) for one in servers.submission)
        + "  </emailProvider>\n</clientConfig>\n"
    )


def autodiscover_xml(servers: ClientServers, address: Address) -> str:
    """The Autodiscover `responseschema/2006a` Account answer for `address` (its login name)."""
    login = escape(str(address))

    def protocol(kind: str, one: MailServer) -> str:
        return (
            "      <Protocol>\n"
            f"        <Type>{kind}</Type>\n"
            f"        <Server>{escape(one.host)}</Server>\n"
            f"        <Port>{one.port}</Port>\n"
            "        <DomainRequired>off</DomainRequired>\n"
            f"        <LoginName>{login}</LoginName>\n"
            "        <SPA>off</SPA>\n"
            f"        <Encryption>{'SSL' if one.security == 'SSL' else 'TLS'}</Encryption>\n"
            "        <AuthRequired>on</AuthRequired>\n"
            "      </Protocol>\n"
        )

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{AUTODISCOVER_SCHEMA}">\n'
        f'  <Response xmlns="{RESPONSE_SCHEMA}">\n'
        "    <Account>\n"
        "      <AccountType>email</AccountType>\n"
        "      <Action>settings</Action>\n"
        + "".join(protocol("IMAP", one) for one in servers.imap)
        + "".join(protocol("SMTP", one) for one in servers.submission)
        + "    </Account>\n  </Response>\n</Autodiscover>\n"
    )


def parse_address(text: str) -> Address:
    """The address a client asked about, or `BadRequest`."""
    try:
        return Address.parse(text.strip())
    except AddressError:
        raise BadRequest("send the address as local@domain") from None


def autodiscover_request_address(body: bytes) -> Address:
    """The `EMailAddress` of an Autodiscover POX request, parsed with the defences of the module's
    Security paragraph; `BadRequest` for anything else (a DTD, another namespace, no address)."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    path: list[str] = []
    found: dict[str, list[str]] = {"EMailAddress": [], "AcceptableResponseSchema": []}

    def refuse(*_: object) -> NoReturn:
        raise BadRequest("a document type declaration or entity is not taken here")

    def start(name: str, _attributes: dict[str, str]) -> None:
        path.append(name)
        if len(path) > MAX_DEPTH:
            raise BadRequest("the request is nested too deep")
        if len(path) == 1 and name != f"{REQUEST_SCHEMA} Autodiscover":
            raise BadRequest(f"send an Autodiscover request in the {REQUEST_SCHEMA} namespace")

    def end(_name: str) -> None:
        path.pop()

    def text(data: str) -> None:
        if len(path) == 3 and path[:2] == _REQUEST_PATH:
            into = found.get(path[2].removeprefix(f"{REQUEST_SCHEMA} "))
            if into is not None:
                into.append(data)
                if sum(map(len, into)) > MAX_ADDRESS_CHARACTERS:
                    raise BadRequest("the request's text is too long")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError:
        raise BadRequest("the request is not well-formed XML") from None
    schema = "".join(found["AcceptableResponseSchema"]).strip()
    if schema and schema != RESPONSE_SCHEMA:
        raise BadRequest(f"only the {RESPONSE_SCHEMA} response is served here (IMAP and SMTP)")
    if not found["EMailAddress"]:
        raise BadRequest("the request has no Request/EMailAddress")
    return parse_address("".join(found["EMailAddress"]))


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_OCTETS:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_OCTETS:
            raise _TooLarge
    return bytes(body)


def _one_query_address(request: Request) -> str | None:
    """`?emailaddress=` (any case of the name), or None; `BadRequest` when it is given twice."""
    values = [value for key, value in request.query_params.multi_items() if key.lower() == "emailaddress"]
    if len(values) > 1:
        raise BadRequest("send one emailaddress")
    return values[0] if values else None


def client_setup_routes(setup: ClientSetup) -> list[Route]:
    """The autoconfig and Autodiscover routes answering from `setup`."""

    async def served(domain: str) -> bool:
        return await asyncio.to_thread(setup.serves, domain)

    def not_served() -> Response:
        return PlainTextResponse(_NOT_SERVED, status_code=404)

    def bad(error: BadRequest) -> Response:
        return PlainTextResponse(f"{error}\n", status_code=400)

    async def autoconfig(request: Request) -> Response:
        try:
            given = _one_query_address(request)
            if given is not None:
                domain = parse_address(given).domain
            else:
                host = request.url.hostname or ""  # the Host header, checked by the app's middleware
                domain = normalize_domain(host.lower().removeprefix(AUTOCONFIG_PREFIX))
        except BadRequest as error:
            return bad(error)
        except AddressError:  # a Host the middleware let through that is not a domain (an IP literal)
            return not_served()
        if not await served(domain):
            return not_served()
        return Response(autoconfig_xml(setup.servers, domain), media_type=XML)

    async def autodiscover(request: Request) -> Response:
        try:
            if request.method == "POST":
                address = autodiscover_request_address(await _bounded_body(request))
            else:
                given = _one_query_address(request)
                if given is None:
                    raise BadRequest("POST an Autodiscover request, or GET with ?emailaddress=")
                address = parse_address(given)
        except _TooLarge:
            return PlainTextResponse("the request is too large\n", status_code=413)
        except BadRequest as error:
            return bad(error)
        if not await served(address.domain):
            return not_served()
        return Response(autodiscover_xml(setup.servers, address), media_type="text/xml")

    return [Route(path, autoconfig, methods=["GET"]) for path in AUTOCONFIG_PATHS] + [
        Route(path, autodiscover, methods=["GET", "POST"]) for path in AUTODISCOVER_PATHS
    ]
