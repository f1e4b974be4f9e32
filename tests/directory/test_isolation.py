"""Tenant isolation from the attacker's side: a tenant scope asking for, listing, changing and removing
another tenant's tenant, domains and recipients gets "not found" (or a refusal), never the data.

Every read is also asked of a tenant that reuses a removed tenant's names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import remove_tenant
from postroom.directory import (
    ConflictError,
    Directory,
    DirectoryError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
)
from postroom.mailstore import Mailstore
from postroom.model.scope import OPERATOR, OperatorScope, TenantScope
from postroom.storage import Database, FileBlobStore
from postroom.storage.schema import queue_recipients, spool_messages
from postroom.trace import TraceQuery, TraceService
from tests.support.records import populate, receive


@pytest.fixture
def org(directory: Directory) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "alice@contoso.com", password="alice-password")
    directory.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com"])
    directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    return directory


def as_fabrikam(org: Directory) -> TenantScope:
    return TenantScope(org.get_tenant(OPERATOR, "fabrikam").id)


ATTEMPTS: list[tuple[str, Callable[[Directory, TenantScope], object]]] = [
    ("get tenant", lambda d, s: d.get_tenant(s, "contoso")),
    ("get domain", lambda d, s: d.get_domain(s, "contoso.com")),
    ("domain history", lambda d, s: d.domain_history(s, "contoso.com")),
    ("dkim keys", lambda d, s: d.dkim_keys(s, "contoso.com")),
    ("dkim rotate", lambda d, s: d.rotate_dkim(s, "contoso.com")),
    ("dkim signing key", lambda d, s: d.dkim_signing_key(s, "contoso.com")),
    ("verify domain", lambda d, s: d.mark_verified(s, "contoso.com", "by an intruder")),
    ("remove domain", lambda d, s: d.remove_domain(s, "contoso.com")),
    ("list domains of", lambda d, s: d.list_domains(s, "contoso")),
    ("list recipients of", lambda d, s: d.list_recipients(s, tenant="contoso")),
    ("list recipients in", lambda d, s: d.list_recipients(s, domain="contoso.com")),
    ("get mailbox", lambda d, s: d.get_recipient(s, "alice@contoso.com")),
    ("get group", lambda d, s: d.get_recipient(s, "team@contoso.com")),
    ("rename mailbox", lambda d, s: d.set_recipient(s, "alice@contoso.com", display_name="pwned")),
    ("reset password", lambda d, s: d.set_recipient(s, "alice@contoso.com", password="new-password-1")),
    ("join group", lambda d, s: d.set_recipient(s, "team@contoso.com", add_members=["carol@fabrikam.com"])),
    ("remove mailbox", lambda d, s: d.remove_recipient(s, "alice@contoso.com")),
    ("remove group", lambda d, s: d.remove_recipient(s, "team@contoso.com")),
    ("add domain to", lambda d, s: d.add_domain(s, "evil.example", "contoso")),
]


@pytest.mark.parametrize("attempt", [a for _, a in ATTEMPTS], ids=[name for name, _ in ATTEMPTS])
def test_a_tenant_cannot_reach_another_tenants_data(
    org: Directory, attempt: Callable[[Directory, TenantScope], object]
) -> None:
    before = [(r.primary_address, r.display_name, r.members) for r in org.list_recipients(OPERATOR)]
    with pytest.raises(NotFoundError):
        attempt(org, as_fabrikam(org))
    after = [(r.primary_address, r.display_name, r.members) for r in org.list_recipients(OPERATOR)]
    assert after == before, "nothing changed"
    assert org.check_password("alice@contoso.com", "alice-password")


def test_a_tenant_cannot_create_in_another_tenants_domain(org: Directory) -> None:
    fabrikam = as_fabrikam(org)
    for create in (
        lambda: org.add_mailbox(fabrikam, "mallory@contoso.com"),
        lambda: org.add_group(fabrikam, "g@contoso.com", members=[]),
        lambda: org.add_contact(fabrikam, "c@contoso.com", external_address="x@partner.example"),
    ):
        with pytest.raises(InvalidInputError, match=r"contoso.com is not an accepted domain"):
            create()
    with pytest.raises(InvalidInputError, match="outside this tenant's accepted domains"):
        org.add_group(fabrikam, "g@fabrikam.com", members=["alice@contoso.com"])
    with pytest.raises(ConflictError, match=r"of another tenant$"):
        org.add_domain(fabrikam, "contoso.com", "fabrikam")  # the conflict does not name the owner


def test_listings_show_a_tenant_only_its_own(org: Directory) -> None:
    fabrikam = as_fabrikam(org)
    assert [t.name for t in org.list_tenants(fabrikam)] == ["fabrikam"]
    assert {d.tenant for d in org.list_domains(fabrikam)} == {"fabrikam"}
    assert [r.primary_address for r in org.list_recipients(fabrikam)] == ["carol@fabrikam.com"]
    assert {t.name for t in org.list_tenants(OPERATOR)} == {"contoso", "fabrikam"}
    assert len(org.list_recipients(OPERATOR)) == 3


def test_only_the_operator_makes_tenants_and_skips_the_ownership_proof(org: Directory) -> None:
    fabrikam = as_fabrikam(org)
    with pytest.raises(RefusedError, match="only the service operator"):
        org.add_tenant(fabrikam, "evil")  # type: ignore[arg-type]  (mypy refuses it too)
    with pytest.raises(RefusedError, match="only the service operator"):
        org.add_domain(fabrikam, "fabrikam.net", "fabrikam", verified=True)
    assert org.add_domain(fabrikam, "fabrikam.net", "fabrikam").receives_mail is False


def test_a_tenant_reusing_a_removed_tenants_names_sees_nothing_of_it(
    org: Directory, database: Database, tmp_path: Path
) -> None:
    org.set_recipient(OPERATOR, "carol@fabrikam.com", password="carol-password")
    org.add_group(OPERATOR, "staff@fabrikam.com", members=["carol@fabrikam.com"])
    old = org.get_tenant(OPERATOR, "fabrikam")  # the newest tenant: the highest id
    remove_tenant(database, FileBlobStore(tmp_path / "blobs"), org, OPERATOR, "fabrikam", apply=True)
    new = org.add_tenant(OPERATOR, "fabrikam")
    assert new.id != old.id, "tenant ids are never reused"
    org.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    carol = org.add_mailbox(OPERATOR, "carol@fabrikam.com")
    scope = TenantScope(new.id)
    assert [r.primary_address for r in org.list_recipients(scope)] == ["carol@fabrikam.com"]
    assert not carol.has_password and not org.check_password("carol@fabrikam.com", "carol-password")
    with pytest.raises(NotFoundError):
        org.get_recipient(scope, "staff@fabrikam.com")
    with pytest.raises(NotFoundError):
        org.get_tenant(TenantScope(old.id), "fabrikam")
    assert {d.name for d in org.list_domains(scope)} == {"fabrikam.com", "fabrikam.postroom.test"}
    assert org.list_recipients(TenantScope(old.id)) == []


def test_every_tenant_data_method_requires_a_scope() -> None:
    """The unscoped call cannot be written by accident: the scope is a required first parameter."""
    import inspect

    # Mail-flow lookups that take the tenant id the message already carries (the queue, delivery).
    unscoped = {
        "authenticate_api_token",  # how an admin API request gets its scope
        "check_password",
        "delete_tenant",
        "external_postmaster",
        "outbound_connector_by_id",  # delivery and validation: the connector a queued recipient names
        "remote_domain_for",
    }
    for name, method in inspect.getmembers(Directory, inspect.isfunction):
        if name.startswith("_") or name in unscoped:
            continue
        parameters = list(inspect.signature(method).parameters.values())
        assert parameters[1].name == "scope", name
        assert parameters[1].default is inspect.Parameter.empty, name
    assert isinstance(OPERATOR, OperatorScope)
    assert issubclass(RefusedError, DirectoryError)


def test_removing_a_tenant_removes_its_mail_queue_trace_and_unshared_files(
    database: Database, directory: Directory, tmp_path: Path
) -> None:
    populate(directory)
    blobs = FileBlobStore(tmp_path / "blobs")
    mailstore = Mailstore(database, blobs)
    trace = TraceService(database)
    shared = receive(database, blobs, "x@example.net", ["alice@contoso.com", "carol@fabrikam.com"], SHARED)
    own = receive(database, blobs, "x@example.net", ["carol@fabrikam.com"], OWN)
    queued = receive(database, blobs, "x@example.net", ["partner@contoso.com"], QUEUED)
    fabrikam = directory.get_tenant(OPERATOR, "fabrikam")
    shared_file, own_file = blobs.path(hash_of(SHARED)), blobs.path(hash_of(OWN))

    preview = remove_tenant(database, blobs, directory, OPERATOR, "fabrikam", apply=False)
    assert (preview.domains, preview.recipients, preview.messages, preview.trace_messages) == (3, 1, 2, 2)
    assert (preview.queue_recipients, preview.blobs) == (0, 1)
    assert directory.get_tenant(OPERATOR, "fabrikam") == fabrikam, "the preview changed nothing"
    assert len(trace.search(TraceQuery(), TenantScope(fabrikam.id))) == 2

    removed = remove_tenant(database, blobs, directory, OPERATOR, "fabrikam", apply=True)
    assert removed == preview
    assert trace.search(TraceQuery(), TenantScope(fabrikam.id)) == []
    assert trace.detail(own, TenantScope(fabrikam.id)) is None and trace.detail(own, OPERATOR) is None
    assert trace.detail(shared, OPERATOR) is not None, "contoso's rows of the shared message stay"
    assert not own_file.exists() and shared_file.exists(), "a file another tenant's message uses stays"
    alice = directory.get_recipient(OPERATOR, "alice@contoso.com")
    assert [m.trace_id for m in mailstore.list_messages(OPERATOR, alice.id)] == [shared]
    with database.read() as conn:
        assert conn.execute(select(queue_recipients.c.message_id)).scalars().all() == [queued]

    contoso = remove_tenant(database, blobs, directory, OPERATOR, "contoso", apply=True)
    assert (contoso.messages, contoso.queue_recipients, contoso.blobs) == (1, 1, 2)
    assert not shared_file.exists() and not blobs.path(hash_of(QUEUED)).exists()
    with database.read() as conn:
        assert conn.execute(select(queue_recipients.c.id)).all() == []
        assert conn.execute(select(spool_messages.c.id)).all() == []


SHARED = b"Subject: to both\r\n\r\nshared\r\n"
OWN = b"Subject: to fabrikam\r\n\r\nown\r\n"
QUEUED = b"Subject: to the partner\r\n\r\nqueued\r\n"


def hash_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
