"""From the attacker's side: another tenant, or a user of another tenant, guessing quarantine ids
learns and changes nothing; a tenant made with a removed tenant's name finds nothing of the old one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.app import App, remove_tenant
from postroom.directory import Directory
from postroom.model.scope import OPERATOR, Scope, TenantScope
from postroom.quarantine import QuarantineNotFoundError, QuarantineService, QuarantineUser
from postroom.storage import BlobStore, Database, FileBlobStore
from tests.support.node import make_node
from tests.support.quarantine import held
from tests.support.records import populate


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


async def every_action_is_not_found(
    service: QuarantineService, scope: Scope, quarantine_id: int, user: QuarantineUser | None
) -> None:
    """Each read and action on the id answers as for an id that never existed."""
    calls: list[Callable[[], object]] = [
        lambda: service.show(scope, quarantine_id, user=user),
        lambda: service.preview(scope, quarantine_id, user=user),
        lambda: service.delete(scope, quarantine_id, user=user),
        lambda: service.request_release(scope, quarantine_id, user),
    ]
    for call in calls:
        with pytest.raises(QuarantineNotFoundError, match=f"^no quarantined message {quarantine_id}$"):
            call()
    with pytest.raises(QuarantineNotFoundError, match=f"^no quarantined message {quarantine_id}$"):
        await service.release(scope, quarantine_id, user=user)
    with pytest.raises(QuarantineNotFoundError, match=f"^no quarantined message {quarantine_id}$"):
        await service.release(scope, quarantine_id, to=["alice@contoso.com"], user=user)


async def test_another_tenant_guessing_ids_sees_and_changes_nothing(
    database: Database, blobs: BlobStore, directory: Directory
) -> None:
    org = populate(directory)
    service = QuarantineService(database, blobs)
    victims = [
        held(database, blobs, org.contoso, [("alice@contoso.com", org.alice)], reason=reason, at=1000.0 + i)
        for i, reason in enumerate(("spam", "high-confidence-phish", "malware"))
    ]
    own = held(database, blobs, org.fabrikam, [("carol@fabrikam.com", org.carol)], at=2000.0)
    fabrikam = TenantScope(org.fabrikam)
    carol = QuarantineUser(org.carol, "carol@fabrikam.com")
    # Carol naming a mailbox of contoso as hers gains nothing: her scope is her own tenant.
    impostor = QuarantineUser(org.alice, "carol@fabrikam.com")
    for user in (None, carol, impostor):
        assert [m.id for m in service.list_messages(fabrikam, user=user)] == (
            [] if user is impostor else [own]
        )
        assert service.list_messages(fabrikam, recipient="alice@contoso.com", user=user) == []
        for guess in [*victims, own + 1, 0, -1, 10**9]:
            await every_action_is_not_found(service, fabrikam, guess, user)
    listed = service.list_messages(OPERATOR)
    assert [m.id for m in listed] == [own, *reversed(victims)]
    assert [m.state for m in listed] == ["held"] * 4


async def test_a_tenant_reusing_a_removed_tenants_name_sees_nothing_of_the_old_one(tmp_path: Path) -> None:
    app = App.open(make_node(tmp_path / "node"))
    try:
        old = populate(app.directory)
        gone = held(app.database, app.blobs, old.contoso, [("alice@contoso.com", old.alice)])
        kept = held(app.database, app.blobs, old.fabrikam, [("carol@fabrikam.com", old.carol)])
        removal = remove_tenant(app.database, app.blobs, app.directory, OPERATOR, "contoso", apply=True)
        assert removal.quarantined == 1

        again = app.directory.add_tenant(OPERATOR, "contoso")
        app.directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
        alice = app.directory.add_mailbox(OPERATOR, "alice@contoso.com")
        assert again.id != old.contoso and alice.id != old.alice  # ids are never reused
        scope = TenantScope(again.id)
        user = QuarantineUser(alice.id, "alice@contoso.com")
        assert app.quarantine.list_messages(scope) == []
        assert app.quarantine.list_messages(scope, user=user) == []
        for caller in (None, user):
            with pytest.raises(QuarantineNotFoundError):
                app.quarantine.show(scope, gone, user=caller)
            with pytest.raises(QuarantineNotFoundError):
                await app.quarantine.release(scope, gone, user=caller)
        assert [m.id for m in app.quarantine.list_messages(OPERATOR)] == [kept]
    finally:
        app.close()
