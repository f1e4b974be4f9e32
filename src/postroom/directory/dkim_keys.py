"""The DKIM keys of accepted domains: made on first use, rotated, read by the signer (part of the
directory service; the key material itself is `dkim.py`'s).

Rotation (`rotate_dkim`) switches signing to the waiting selector and leaves the retired selector's
key as it is, published, for `RETIRED_KEY_SECONDS`; reading the keys after that gives the retired
selector a new key pair, which the tenant publishes before the next rotation. A rotation while the
waiting selector still holds its retired key first gives it a new key (only a forced rotation gets
there: without `--force` the CLI refuses until DNS publishes the waiting key).

Scope: a tenant scope reads and rotates its own domains' keys only; another tenant's domain is not
found. A rotation changes nothing mail flow caches, so it does not bump the directory generation.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update

from postroom.directory.base import DirectoryBase
from postroom.directory.dkim import DKIM_SELECTORS, RETIRED_KEY_SECONDS, DkimKey, generate_key_pair
from postroom.directory.lookups import DOMAIN_COLUMNS, domain_from_row
from postroom.directory.records import AcceptedDomain, DomainStatus
from postroom.model.outbound import DkimSigner
from postroom.model.scope import Scope, TenantScope
from postroom.storage.schema import dkim_keys, domain_history, domains, tenants


class DkimKeys(DirectoryBase):
    def dkim_keys(self, scope: Scope, name: str) -> tuple[DkimKey, ...]:
        """The domain's DKIM selectors, in `DKIM_SELECTORS` order; made on first use (the first active)."""
        return self._made_dkim_keys(self._scoped_domain(scope, name))

    def rotate_dkim(self, scope: Scope, name: str) -> tuple[DkimKey, ...]:
        """Sign with the other selector from now on; the retired selector keeps its key, published, for
        `RETIRED_KEY_SECONDS` (mail signed with it may still be in flight), then gets a new one.

        The selector that signs now kept its key, which has been in DNS since it was made (unless it
        still held a retired key: then it gets a new one first, and only a forced rotation comes here).
        """
        domain = self._scoped_domain(scope, name)
        keys = self._made_dkim_keys(domain)
        retired = next(k for k in keys if k.active)
        successor = next(k for k in keys if not k.active)
        now = self._clock()
        with self._write() as (conn, _):
            rows = dkim_keys.c.domain_id == domain.id
            signing: dict[str, object] = {"active": True, "retired_at": None}
            if successor.retired_at is not None:
                pair = generate_key_pair()
                signing |= {
                    "private_key": pair.private_key_pem,
                    "public_key": pair.public_key,
                    "created_at": now,
                }
            conn.execute(
                update(dkim_keys).where(rows, dkim_keys.c.selector == successor.selector).values(signing)
            )
            conn.execute(
                update(dkim_keys)
                .where(rows, dkim_keys.c.selector == retired.selector)
                .values(active=False, retired_at=now)
            )
            conn.execute(
                insert(domain_history).values(
                    domain_id=domain.id,
                    at=now,
                    event="dkim-rotated",
                    detail=f"{successor.selector} signs now; {retired.selector} keeps its key published "
                    f"for mail in flight, then gets a new one to publish",
                )
            )
        return self._dkim_keys(domain)

    def dkim_signing_key(self, scope: Scope, name: str) -> tuple[str, str]:
        """The active selector of the domain and its private key (PKCS#8 PEM), for the signer."""
        domain = self._scoped_domain(scope, name)
        active = next(k for k in self._made_dkim_keys(domain) if k.active)
        with self._db.read() as conn:
            pem: str = conn.execute(
                select(dkim_keys.c.private_key).where(
                    dkim_keys.c.domain_id == domain.id, dkim_keys.c.selector == active.selector
                )
            ).scalar_one()
        return active.selector, pem

    def arc_sealing_key(self, scope: TenantScope) -> DkimSigner | None:
        """The key the tenant seals the mail it forwards with (ARC): the active DKIM key of its default
        domain when verified, else of its first verified domain by name; None when it has none."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(*DOMAIN_COLUMNS)
                .join(tenants, tenants.c.id == domains.c.tenant_id)
                .where(
                    domains.c.tenant_id == scope.tenant_id, domains.c.status == DomainStatus.VERIFIED.value
                )
                .order_by(domains.c.is_default.desc(), domains.c.name)
                .limit(1)
            ).all()
        if not rows:
            return None
        domain = domain_from_row(rows[0])
        selector, pem = self.dkim_signing_key(scope, domain.name)
        return DkimSigner(domain.name, selector, pem)

    def _scoped_domain(self, scope: Scope, name: str) -> AcceptedDomain:
        with self._db.read() as conn:
            return self._domain(conn, scope, name)

    def _made_dkim_keys(self, domain: AcceptedDomain) -> tuple[DkimKey, ...]:
        keys = self._dkim_keys(domain)
        if len(keys) == len(DKIM_SELECTORS):
            return self._renewed(domain, keys)
        made = {s: generate_key_pair() for s in DKIM_SELECTORS if s not in {k.selector for k in keys}}
        with self._write() as (conn, _):
            present = {
                row.selector
                for row in conn.execute(
                    select(dkim_keys.c.selector).where(dkim_keys.c.domain_id == domain.id)
                ).all()
            }
            for selector, pair in made.items():
                if selector in present:  # another process made it meanwhile: keep theirs
                    continue
                conn.execute(
                    insert(dkim_keys).values(
                        domain_id=domain.id,
                        selector=selector,
                        private_key=pair.private_key_pem,
                        public_key=pair.public_key,
                        active=selector == DKIM_SELECTORS[0] and not present,
                        created_at=self._clock(),
                    )
                )
            if not present:
                conn.execute(
                    insert(domain_history).values(
                        domain_id=domain.id,
                        at=self._clock(),
                        event="dkim-keys-created",
                        detail=f"DKIM keys made for selectors {', '.join(DKIM_SELECTORS)}; "
                        f"{DKIM_SELECTORS[0]} signs",
                    )
                )
        return self._dkim_keys(domain)

    def _renewed(self, domain: AcceptedDomain, keys: tuple[DkimKey, ...]) -> tuple[DkimKey, ...]:
        """Give a selector whose retired key has served its time a new key pair (the next to publish)."""
        now = self._clock()
        due = [k for k in keys if k.retired_at is not None and now - k.retired_at >= RETIRED_KEY_SECONDS]
        if not due:
            return keys
        with self._write() as (conn, _):
            for key in due:
                pair = generate_key_pair()
                renewed = conn.execute(
                    update(dkim_keys)
                    .where(
                        dkim_keys.c.domain_id == domain.id,
                        dkim_keys.c.selector == key.selector,
                        dkim_keys.c.retired_at == key.retired_at,  # another process may have renewed it
                    )
                    .values(
                        private_key=pair.private_key_pem,
                        public_key=pair.public_key,
                        created_at=now,
                        retired_at=None,
                    )
                ).rowcount
                if renewed:
                    conn.execute(
                        insert(domain_history).values(
                            domain_id=domain.id,
                            at=now,
                            event="dkim-key-renewed",
                            detail=f"{key.selector} has a new key to publish before the next rotation",
                        )
                    )
        return self._dkim_keys(domain)

    def _dkim_keys(self, domain: AcceptedDomain) -> tuple[DkimKey, ...]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(
                    dkim_keys.c.selector,
                    dkim_keys.c.public_key,
                    dkim_keys.c.active,
                    dkim_keys.c.created_at,
                    dkim_keys.c.retired_at,
                ).where(dkim_keys.c.domain_id == domain.id)
            ).all()
        order = {selector: index for index, selector in enumerate(DKIM_SELECTORS)}
        return tuple(
            DkimKey(domain.name, row.selector, row.public_key, row.active, row.created_at, row.retired_at)
            for row in sorted(rows, key=lambda row: order.get(row.selector, len(order)))
        )
