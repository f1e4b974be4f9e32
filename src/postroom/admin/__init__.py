"""The admin HTTP listener and its app: for now the MTA-STS policies of the hosted domains.

The public face is re-exported here; see `postroom.admin.app` for what is served and
`postroom.admin.listener` for how uvicorn runs inside the node.
"""

from postroom.admin.app import PolicyLookup, build_admin_app, request_host
from postroom.admin.listener import AdminListener

__all__ = ["AdminListener", "PolicyLookup", "build_admin_app", "request_host"]
