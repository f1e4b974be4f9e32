"""The tenant admin API on the admin listener: a tenant's connectors as JSON, and the admin center's
connectors page.

| method | path                                              | answer                                  |
|--------|---------------------------------------------------|-----------------------------------------|
| GET    | `/api/v1/connectors/inbound`                      | the tenant's inbound connectors         |
| GET    | `/api/v1/connectors/inbound/{name}`               | one, with every setting                 |
| POST   | `/api/v1/connectors/inbound/{name}/enable`        | turn it on (`/disable`: off); the result |
| GET    | `/api/v1/connectors/outbound`                     | outbound connectors, validation state   |
| GET    | `/api/v1/connectors/outbound/{name}`              | one, with its last validation run       |
| POST   | `/api/v1/connectors/outbound/{name}/enable`       | as inbound (`/disable` too)             |
| GET    | `/connectors`                                     | the admin center page (`text/html`)     |

A name is the connector's, URL-encoded (`From%20on-premises`), in any case. Errors are JSON
`{"error": "..."}` with the directory's message: 404 for a connector the tenant does not have, 400 for
a refused change; 401 without a valid token.

**Who.** Every request presents an API token (`directory.api_tokens`) and acts for that token's
tenant, in its `TenantScope`: no path or parameter names a tenant, so a tenant admin can only ever ask
about its own connectors, and another tenant's connector names are answered 404 exactly like names
nobody uses. The token comes as `Authorization: Bearer <token>` or, so that a browser can open the
page, as the password of HTTP Basic (the user name is the tenant's name). Changes (POST) take the
Bearer form only: a browser resends a Basic password by itself, so another site could make a
visitor's browser post a change (cross-site request forgery); it cannot add an Authorization header
(that needs a CORS preflight, which this app never grants).

*Security:* headers and paths are untrusted; the token is compared by its SHA-256 in one indexed
read and nothing about a failed one is echoed. The directory is read in a worker thread
(`asyncio.to_thread`), as the MTA-STS lookups are. The page is served with a Content Security Policy
that allows no script and no fetch, and may not be framed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from postroom.admin.connectors import render_connectors
from postroom.directory import ApiCaller, DirectoryError, NotFoundError
from postroom.model.connectors import (
    InboundConnector,
    OutboundConnector,
    ValidationResult,
    last_validation_run,
    validation_state,
)
from postroom.model.scope import Scope

API_PREFIX = "/api/v1"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_CHALLENGES = ('Basic realm="Postroom admin", charset="UTF-8"', 'Bearer realm="Postroom admin"')


class ConnectorDirectory(Protocol):
    """What these routes ask the directory (`directory.Directory` is one)."""

    def authenticate_api_token(self, secret: str) -> ApiCaller | None: ...

    def inbound_connectors(self, scope: Scope, tenant: str) -> list[InboundConnector]: ...

    def inbound_connector(self, scope: Scope, tenant: str, name: str) -> InboundConnector: ...

    def set_inbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> InboundConnector: ...

    def outbound_connectors(self, scope: Scope, tenant: str) -> list[OutboundConnector]: ...

    def outbound_connector(self, scope: Scope, tenant: str, name: str) -> OutboundConnector: ...

    def set_outbound_connector(
        self, scope: Scope, tenant: str, name: str, **settings: object
    ) -> OutboundConnector: ...

    def connector_validations(
        self, scope: Scope, tenant: str, name: str, limit: int = 20
    ) -> list[ValidationResult]: ...


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "ips"}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _json(value: object, status: int = 200) -> Response:
    body = json.dumps(_plain(value), ensure_ascii=False, indent=2) + "\n"
    return Response(body, status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _unauthorized(message: str) -> Response:
    response = _error(message, 401)
    for challenge in _CHALLENGES:
        response.headers.append("WWW-Authenticate", challenge)
    return response


def _presented(request: Request) -> tuple[str, str | None] | None:
    """(token, Basic user name or None for Bearer) from the Authorization header, or None."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        return (password, user) if colon else None
    return None


def _outbound_row(connector: OutboundConnector, results: Sequence[ValidationResult]) -> dict[str, object]:
    row = _plain(connector)
    assert isinstance(row, dict)
    row["validation"] = validation_state(results)
    row["last_validation"] = _plain(last_validation_run(results))
    return row


Handler = Callable[[Request, ApiCaller], Awaitable[Response]]


def connector_routes(directory: ConnectorDirectory) -> list[Route]:
    """The API's connector routes and the connectors page, answering for the caller's tenant."""

    def authenticated(handler: Handler, *, change: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            presented = _presented(request)
            if presented is None:
                return _unauthorized("present your API token: Authorization: Bearer <token>")
            token, basic_user = presented
            caller = await asyncio.to_thread(directory.authenticate_api_token, token)
            if caller is None or (basic_user is not None and basic_user.strip().lower() != caller.tenant):
                return _unauthorized("that API token is not valid; ask your operator for one")
            if change and basic_user is not None:
                return _error(
                    "a change needs the token as a Bearer header (Authorization: Bearer <token>); a "
                    "browser's saved password is not taken for changes",
                    403,
                )
            try:
                return await handler(request, caller)
            except NotFoundError as error:
                return _error(str(error), 404)
            except DirectoryError as error:
                return _error(str(error), 400)

        return endpoint

    async def inbound_list(_request: Request, caller: ApiCaller) -> Response:
        found = await asyncio.to_thread(directory.inbound_connectors, caller.scope, caller.tenant)
        return _json(found)

    async def inbound_show(request: Request, caller: ApiCaller) -> Response:
        name = request.path_params["name"]
        found = await asyncio.to_thread(directory.inbound_connector, caller.scope, caller.tenant, name)
        return _json(found)

    def inbound_switch(enabled: bool) -> Handler:
        async def switch(request: Request, caller: ApiCaller) -> Response:
            name = request.path_params["name"]

            def change() -> InboundConnector:
                return directory.set_inbound_connector(caller.scope, caller.tenant, name, enabled=enabled)

            return _json(await asyncio.to_thread(change))

        return switch

    def outbound_with_history(caller: ApiCaller, names: Sequence[str] | None) -> list[dict[str, object]]:
        found = (
            directory.outbound_connectors(caller.scope, caller.tenant)
            if names is None
            else [directory.outbound_connector(caller.scope, caller.tenant, n) for n in names]
        )
        return [
            _outbound_row(c, directory.connector_validations(caller.scope, caller.tenant, c.name))
            for c in found
        ]

    async def outbound_list(_request: Request, caller: ApiCaller) -> Response:
        return _json(await asyncio.to_thread(outbound_with_history, caller, None))

    async def outbound_show(request: Request, caller: ApiCaller) -> Response:
        [row] = await asyncio.to_thread(outbound_with_history, caller, [request.path_params["name"]])
        return _json(row)

    def outbound_switch(enabled: bool) -> Handler:
        async def switch(request: Request, caller: ApiCaller) -> Response:
            name = request.path_params["name"]

            def change() -> list[dict[str, object]]:
                changed = directory.set_outbound_connector(caller.scope, caller.tenant, name, enabled=enabled)
                return outbound_with_history(caller, [changed.name])

            [row] = await asyncio.to_thread(change)
            return _json(row)

        return switch

    async def page(_request: Request, caller: ApiCaller) -> Response:
        def load() -> str:
            inbound = directory.inbound_connectors(caller.scope, caller.tenant)
            outbound = directory.outbound_connectors(caller.scope, caller.tenant)
            history = {
                c.id: directory.connector_validations(caller.scope, caller.tenant, c.name) for c in outbound
            }
            return render_connectors(caller.tenant, inbound, outbound, history)

        return HTMLResponse(await asyncio.to_thread(load), headers=PAGE_HEADERS)

    base = f"{API_PREFIX}/connectors"
    return [
        Route(f"{base}/inbound", authenticated(inbound_list), methods=["GET"]),
        Route(
            f"{base}/inbound/{{name:path}}/enable",
            authenticated(inbound_switch(True), change=True),
            methods=["POST"],
        ),
        Route(
            f"{base}/inbound/{{name:path}}/disable",
            authenticated(inbound_switch(False), change=True),
            methods=["POST"],
        ),
        Route(f"{base}/inbound/{{name:path}}", authenticated(inbound_show), methods=["GET"]),
        Route(f"{base}/outbound", authenticated(outbound_list), methods=["GET"]),
        Route(
            f"{base}/outbound/{{name:path}}/enable",
            authenticated(outbound_switch(True), change=True),
            methods=["POST"],
        ),
        Route(
            f"{base}/outbound/{{name:path}}/disable",
            authenticated(outbound_switch(False), change=True),
            methods=["POST"],
        ),
        Route(f"{base}/outbound/{{name:path}}", authenticated(outbound_show), methods=["GET"]),
        Route("/connectors", authenticated(page), methods=["GET"]),
    ]
