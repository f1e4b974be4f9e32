"""The directory service: one object for the organization as data, composed of one part per job.

| part                | module          | job                                                  |
|---------------------|-----------------|------------------------------------------------------|
| `TenantsAndDomains` | `tenants.py`    | tenants, accepted domains, their history and removal |
| `DkimKeys`          | `dkim_keys.py`  | the DKIM keys of accepted domains                    |
| `Recipients`        | `recipients.py` | mailboxes, groups, contacts, proxy addresses         |
| `Credentials`       | `credentials.py`| the password policy, Argon2id hashes, the login check |
| `OrganizationSettings` | `organization.py` | (external) postmaster, auto-forwarding, group senders |
| `Sending`           | `sending.py`    | SMTP AUTH switches, size limits, send-as, restricted senders |
| `RemoteDomains`     | `remote_domains.py` | a tenant's remote domains (Default `*` and specific ones) |
| `Forwarding`        | `forwarding.py` | mailbox forwarding                                   |
| `Quotas`            | `quota.py`      | mailbox quotas (size limits)                         |
| `ProtectionPolicies` | `protection.py` | protection policies, mailboxes' safe and blocked senders |
| `Connectors`        | `connectors.py` | connectors, their validation history, the scenario |
| `ApiTokens`         | `api_tokens.py` | the admin API's tenant tokens                        |
| `AppliedScenarios`  | `scenarios.py`  | the scenario a tenant applied, parsed (the spec §4 table, plans) |

They share `base.DirectoryBase` (the store, the clock, scoped lookups, the write transaction that
logs changes for caching nodes). Callers hold one `Directory`; the parts keep each job in its file.

Every method that reads or changes tenant data takes the caller's `Scope` first, with no default;
another tenant's rows are answered as rows that do not exist. Every change is one transaction, and
every rule an IT pro relies on is enforced here, not in the CLI or the API; nothing is half-written
when a `DirectoryError` is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from argon2 import PasswordHasher

from postroom.directory.api_tokens import ApiTokens
from postroom.directory.connectors import Connectors
from postroom.directory.credentials import PasswordPolicy
from postroom.directory.dkim_keys import DkimKeys
from postroom.directory.forwarding import Forwarding
from postroom.directory.names import service_labels
from postroom.directory.organization import OrganizationSettings
from postroom.directory.protection import ProtectionPolicies
from postroom.directory.quota import Quotas
from postroom.directory.recipients import Recipients
from postroom.directory.remote_domains import RemoteDomains
from postroom.directory.scenarios import AppliedScenarios
from postroom.directory.sending import Sending
from postroom.directory.tenants import TenantsAndDomains
from postroom.model import normalize_domain
from postroom.storage import Database

DEFAULT_PASSWORD_POLICY = PasswordPolicy()


class Directory(
    TenantsAndDomains,
    DkimKeys,
    Recipients,
    OrganizationSettings,
    Sending,
    RemoteDomains,
    Forwarding,
    Quotas,
    ProtectionPolicies,
    Connectors,
    ApiTokens,
    AppliedScenarios,
):
    """Organization configuration as data, for the CLI, the admin API and the app."""

    def __init__(
        self,
        database: Database,
        *,
        service_domain: str,
        service_hosts: Iterable[str] = (),
        password_policy: PasswordPolicy = DEFAULT_PASSWORD_POLICY,
        clock: Callable[[], float] = time.time,
        password_hasher: PasswordHasher | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """`service_hosts`: the service's own host names (node, MX suffix, SPF host), whose labels no
        tenant may take as its name."""
        super().__init__(database, service_domain=service_domain, clock=clock, on_change=on_change)
        self.reserved_names = service_labels(normalize_domain(service_domain), service_hosts)
        self.password_policy = password_policy
        self._hasher = password_hasher or PasswordHasher()
