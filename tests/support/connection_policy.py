"""A tenant's connection filter policy written as the directory stores it (`protection_policies`, kind
`connection`), for tests that need a tenant's IP lists before the node reads them."""

from __future__ import annotations

import json
import time

from sqlalchemy import insert

from postroom.app import App
from postroom.model.scope import OPERATOR
from postroom.storage.schema import protection_policies


def set_connection_policy(app: App, tenant: str, **lists: list[str]) -> None:
    """Give `tenant` the IP lists `ip_allow` and `ip_block`."""
    tenant_id = app.directory.get_tenant(OPERATOR, tenant).id
    with app.database.write() as conn:
        conn.execute(
            insert(protection_policies).values(
                tenant_id=tenant_id,
                kind="connection",
                name="Default",
                priority=None,
                enabled=True,
                settings=json.dumps(lists),
                created_at=time.time(),
            )
        )
