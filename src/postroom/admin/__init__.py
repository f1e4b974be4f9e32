"""The admin HTTP listener and its app: the MTA-STS policies of the hosted domains, health and metrics,
the tenant admin API and the admin center's connectors page (`postroom.admin.api`), mail clients'
autoconfig and Autodiscover (`postroom.admin.clients`).

The public face is re-exported here; see `postroom.admin.app` for what is served and
`postroom.admin.listener` for how uvicorn runs inside the node.
"""

from postroom.admin.app import LOOPBACK, Monitor, PolicyLookup, build_admin_app, request_host
from postroom.admin.clients import ClientServers, ClientSetup
from postroom.admin.listener import AdminListener

__all__ = [
    "LOOPBACK",
    "AdminListener",
    "ClientServers",
    "ClientSetup",
    "Monitor",
    "PolicyLookup",
    "build_admin_app",
    "request_host",
]
