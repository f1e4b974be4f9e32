"""The directory's rules: tenants and domains, unique addresses, aliases confined to the tenant's
verified domains, primary switching, groups, contacts, removal, passwords."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import remove_tenant
from postroom.directory import (
    ConflictError,
    Directory,
    DomainStatus,
    DomainType,
    InvalidInputError,
    NotFoundError,
    RecipientKind,
    find_address,
)
from postroom.mailstore import MAILBOX_FOLDERS
from postroom.model.scope import OPERATOR
from postroom.storage import Database, FileBlobStore
from postroom.storage.schema import addresses, folders, recipients
from tests.support.records import new_directory


@pytest.fixture
def org(directory: Directory) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_domain(OPERATOR, "pending.contoso.net", "contoso")
    directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    directory.add_domain(OPERATOR, "bücher.de", "fabrikam", verified=True)
    return directory


# --- tenants and domains ----------------------------------------------------------------------------
def test_tenant_gets_a_verified_default_domain(directory: Directory) -> None:
    tenant = directory.add_tenant(OPERATOR, "  Contoso ")
    assert tenant.name == "contoso"
    [domain] = directory.list_domains(OPERATOR, "contoso")
    assert (domain.name, domain.tenant, domain.tenant_id) == ("contoso.postroom.test", "contoso", tenant.id)
    assert (domain.type, domain.status, domain.is_default) == (
        DomainType.AUTHORITATIVE,
        DomainStatus.VERIFIED,
        True,
    )
    assert domain.receives_mail and domain.verified_at is not None
    assert domain.domain_key == "contoso-postroom-test"
    assert [t.name for t in directory.list_tenants(OPERATOR)] == ["contoso"]


@pytest.mark.parametrize("name", ["", "a.b", "-x", "x-", "x" * 64, "two words", "x_y"])
def test_invalid_tenant_names(directory: Directory, name: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid tenant name"):
        directory.add_tenant(OPERATOR, name)
    assert directory.list_tenants(OPERATOR) == []


def test_unicode_tenant_is_found_by_its_name(directory: Directory) -> None:
    tenant = directory.add_tenant(OPERATOR, "Bücher")
    assert tenant.name == "xn--bcher-kva"
    assert directory.get_tenant(OPERATOR, "bücher").id == tenant.id
    assert directory.add_domain(OPERATOR, "buecher.de", "BÜCHER").tenant_id == tenant.id
    assert [d.name for d in directory.list_domains(OPERATOR, "xn--bcher-kva")] == [
        "buecher.de",
        "xn--bcher-kva.postroom.test",
    ]


def test_tenant_names_are_unique(directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    with pytest.raises(ConflictError, match="already exists"):
        directory.add_tenant(OPERATOR, "CONTOSO")


def test_pending_and_verified_domains_and_their_history(database: Database) -> None:
    ticks = itertools.count(1000.0)
    directory = new_directory(database, clock=lambda: next(ticks))
    directory.add_tenant(OPERATOR, "contoso")
    pending = directory.add_domain(OPERATOR, "Contoso.COM", "contoso")
    assert (pending.name, pending.status, pending.receives_mail, pending.verified_at) == (
        "contoso.com",
        DomainStatus.PENDING,
        False,
        None,
    )
    assert re.fullmatch(r"postroom-verification=[0-9a-f]{24}", pending.verification_record)
    verified = directory.add_domain(
        OPERATOR, "fabrikam.com", "contoso", DomainType.INTERNAL_RELAY, verified=True
    )
    assert (verified.status, verified.type, verified.is_default) == (
        DomainStatus.VERIFIED,
        DomainType.INTERNAL_RELAY,
        False,
    )
    assert verified.verified_at == verified.created_at

    directory.record_domain_event(OPERATOR, "contoso.com", "check", "TXT record not found")
    marked = directory.mark_verified(OPERATOR, "contoso.com", "TXT record found")
    assert marked.status is DomainStatus.VERIFIED and marked.verified_at is not None
    directory.mark_verified(OPERATOR, "contoso.com", "again")  # already verified: no second event
    history = directory.domain_history(OPERATOR, "contoso.com")
    assert [(e.event, e.detail) for e in history] == [
        ("added", "added, pending verification"),
        ("check", "TXT record not found"),
        ("verified", "TXT record found"),
    ]
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert [(e.event, e.detail) for e in directory.domain_history(OPERATOR, "fabrikam.com")] == [
        ("added", "added as verified by the service administrator")
    ]


def test_idna_domain_is_stored_as_a_label(directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "fabrikam")
    domain = directory.add_domain(OPERATOR, "Bücher.de", "fabrikam")
    assert domain.name == "xn--bcher-kva.de"
    assert directory.get_domain(OPERATOR, "bücher.DE").id == domain.id


@pytest.mark.parametrize("name", ["postroom.test", "x.postroom.test", "POSTROOM.TEST"])
def test_domains_inside_the_service_domain_are_refused(directory: Directory, name: str) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    with pytest.raises(InvalidInputError, match="inside the service domain"):
        directory.add_domain(OPERATOR, name, "contoso")


@pytest.mark.parametrize("name", ["not a domain", "-x.com", "a..b"])
def test_invalid_domain_names(directory: Directory, name: str) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    with pytest.raises(InvalidInputError, match="not a valid domain name"):
        directory.add_domain(OPERATOR, name, "contoso")


@pytest.mark.parametrize(("tenant", "variant"), [("fabrikam", "CONTOSO.com"), ("contoso", "Contoso.COM")])
def test_a_domain_belongs_to_one_tenant(org: Directory, tenant: str, variant: str) -> None:
    with pytest.raises(ConflictError, match="already an accepted domain of tenant 'contoso'"):
        org.add_domain(OPERATOR, variant, tenant)


def test_same_idna_domain_cannot_be_added_twice(org: Directory) -> None:
    with pytest.raises(ConflictError, match="tenant 'fabrikam'"):
        org.add_domain(OPERATOR, "xn--bcher-kva.de", "contoso")


def test_domain_keys_stay_distinct_on_collision(directory: Directory) -> None:
    directory.add_tenant(OPERATOR, "contoso")
    assert directory.add_domain(OPERATOR, "a-b.com", "contoso").domain_key == "ab-com01b"
    assert directory.add_domain(OPERATOR, "a.b-com", "contoso").domain_key == "a-bcom01b"
    assert directory.add_domain(OPERATOR, "a--b.com", "contoso").domain_key == "ab-com01c"


def test_domain_of_an_unknown_tenant(directory: Directory) -> None:
    with pytest.raises(NotFoundError, match="no tenant named 'nobody'"):
        directory.add_domain(OPERATOR, "contoso.com", "nobody")


# --- addresses --------------------------------------------------------------------------------------
def test_mailbox_with_folders_and_aliases(org: Directory, database: Database) -> None:
    alice = org.add_mailbox(OPERATOR, "Alice@contoso.com", display_name="Alice", aliases=["al@contoso.com"])
    assert (alice.kind, alice.tenant, alice.primary_address, alice.aliases) == (
        RecipientKind.MAILBOX,
        "contoso",
        "Alice@contoso.com",
        ("al@contoso.com",),
    )
    assert org.get_recipient(OPERATOR, "AL@CONTOSO.COM").id == alice.id
    with database.read() as conn:
        names = conn.execute(select(folders.c.name).where(folders.c.mailbox_id == alice.id)).scalars().all()
    assert sorted(names) == sorted(MAILBOX_FOLDERS)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@contoso.com", "alice@contoso.com"),
        ("alice@contoso.com", "ALICE@contoso.com"),
        ("Alice@contoso.com", "alice@CONTOSO.COM"),
        ("ä@bücher.de", "Ä@xn--bcher-kva.de"),
        ("jörg@BÜCHER.de", "JÖRG@bücher.de"),
    ],
)
def test_addresses_are_unique_across_case_and_idna(org: Directory, first: str, second: str) -> None:
    org.add_mailbox(OPERATOR, first)
    with pytest.raises(ConflictError, match="already in use"):
        org.add_mailbox(OPERATOR, second)
    with pytest.raises(ConflictError, match="already in use"):
        org.add_group(OPERATOR, second, members=[])
    with pytest.raises(ConflictError, match="already in use"):
        org.add_contact(OPERATOR, second, external_address="x@example.net")
    assert len(org.list_recipients(OPERATOR)) == 1


def test_alias_cannot_take_another_recipients_address(org: Directory) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    org.add_mailbox(OPERATOR, "bob@contoso.com")
    with pytest.raises(ConflictError, match="already in use"):
        org.set_recipient(OPERATOR, "bob@contoso.com", add_aliases=["Alice@Contoso.com"])
    assert org.get_recipient(OPERATOR, "alice@contoso.com").primary_address == "alice@contoso.com"
    assert org.get_recipient(OPERATOR, "bob@contoso.com").aliases == ()


@pytest.mark.parametrize(
    ("alias", "fault"),
    [
        ("alice@fabrikam.com", "belongs to another tenant"),  # tenant B's verified domain
        ("alice@BÜCHER.de", "belongs to another tenant"),
        ("alice@pending.contoso.net", "not verified yet"),
        ("alice@unknown.example", "not an accepted domain"),
        ("alice@fabrikam.postroom.test", "belongs to another tenant"),  # B's default domain
        ("not an address", "not a valid address"),
    ],
)
def test_aliases_only_in_verified_domains_of_the_own_tenant(org: Directory, alias: str, fault: str) -> None:
    with pytest.raises(InvalidInputError, match=fault):
        org.add_mailbox(OPERATOR, "alice@contoso.com", aliases=[alias])
    assert org.list_recipients(OPERATOR) == []  # nothing half-written
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    with pytest.raises(InvalidInputError, match=fault):
        org.set_recipient(OPERATOR, "alice@contoso.com", add_aliases=[alias])
    with pytest.raises(InvalidInputError, match=fault):
        org.set_recipient(OPERATOR, "alice@contoso.com", primary=alias)
    alice = org.get_recipient(OPERATOR, "alice@contoso.com")
    assert (alice.primary_address, alice.aliases) == ("alice@contoso.com", ())


@pytest.mark.parametrize(
    ("address", "fault"),
    [
        ("alice@pending.contoso.net", "not verified yet"),
        ("alice@unknown.example", "not an accepted domain"),
    ],
)
def test_primary_address_needs_a_verified_accepted_domain(org: Directory, address: str, fault: str) -> None:
    with pytest.raises(InvalidInputError, match=fault):
        org.add_mailbox(OPERATOR, address)


def test_primary_switching(org: Directory, database: Database) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com", aliases=["al@contoso.com"])
    switched = org.set_recipient(OPERATOR, "alice@contoso.com", primary="AL@contoso.com")
    assert (switched.primary_address, switched.aliases) == ("al@contoso.com", ("alice@contoso.com",))
    with database.read() as conn:
        owner = find_address(conn, "alice@contoso.com")
    assert owner is not None and owner.primary_address == "al@contoso.com"

    new_primary = org.set_recipient(OPERATOR, "al@contoso.com", primary="a.smith@contoso.com")
    assert new_primary.primary_address == "a.smith@contoso.com"
    assert set(new_primary.aliases) == {"al@contoso.com", "alice@contoso.com"}
    with database.read() as conn:
        primaries = (
            conn.execute(
                select(addresses.c.address).where(
                    (addresses.c.recipient_id == new_primary.id) & addresses.c.is_primary
                )
            )
            .scalars()
            .all()
        )
    assert primaries == ["a.smith@contoso.com"]


def test_alias_removal_rules(org: Directory) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com", aliases=["al@contoso.com"])
    org.add_mailbox(OPERATOR, "bob@contoso.com")
    with pytest.raises(ConflictError, match="is the primary address"):
        org.set_recipient(OPERATOR, "al@contoso.com", remove_aliases=["ALICE@contoso.com"])
    with pytest.raises(NotFoundError, match="is not an address of"):
        org.set_recipient(OPERATOR, "alice@contoso.com", remove_aliases=["bob@contoso.com"])
    assert org.set_recipient(OPERATOR, "alice@contoso.com", remove_aliases=["al@contoso.com"]).aliases == ()
    assert org.add_mailbox(OPERATOR, "al@contoso.com").primary_address == "al@contoso.com"  # free again


def test_groups_with_members(org: Directory) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    org.add_mailbox(OPERATOR, "bob@contoso.com")
    org.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    group = org.add_group(
        OPERATOR,
        "team@contoso.com",
        members=["bob@contoso.com", "alice@contoso.com", "ALICE@contoso.com", "partner@contoso.com"],
        display_name="Team",
    )
    assert group.kind is RecipientKind.GROUP
    assert group.members == ("alice@contoso.com", "bob@contoso.com", "partner@contoso.com")
    changed = org.set_recipient(
        OPERATOR,
        "team@contoso.com",
        add_members=["later@contoso.com"],
        remove_members=["BOB@contoso.com"],
        allow_unknown=True,
    )
    assert changed.members == ("alice@contoso.com", "later@contoso.com", "partner@contoso.com")
    with pytest.raises(InvalidInputError, match="not a group"):
        org.set_recipient(OPERATOR, "alice@contoso.com", add_members=["bob@contoso.com"])
    with pytest.raises(InvalidInputError, match="not a valid address"):
        org.add_group(OPERATOR, "g@contoso.com", members=["no at sign"])


def test_contacts(org: Directory) -> None:
    contact = org.add_contact(OPERATOR, "partner@contoso.com", external_address=" Ext@Partner.Example ")
    assert (contact.kind, contact.external_address, contact.has_password) == (
        RecipientKind.CONTACT,
        "Ext@partner.example",
        False,
    )
    with pytest.raises(InvalidInputError, match="only mailboxes have passwords"):
        org.set_recipient(OPERATOR, "partner@contoso.com", password="pw")
    with pytest.raises(InvalidInputError, match="not a valid address"):
        org.add_contact(OPERATOR, "other@contoso.com", external_address="nowhere")


def test_list_recipients_filters(org: Directory) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    org.add_group(OPERATOR, "team@contoso.com", members=[])
    org.add_mailbox(OPERATOR, "carol@fabrikam.com")
    org.add_mailbox(OPERATOR, "dora@bücher.de")
    assert [r.primary_address for r in org.list_recipients(OPERATOR, tenant="contoso")] == [
        "alice@contoso.com",
        "team@contoso.com",
    ]
    assert [r.primary_address for r in org.list_recipients(OPERATOR, kind=RecipientKind.GROUP)] == [
        "team@contoso.com"
    ]
    assert [r.primary_address for r in org.list_recipients(OPERATOR, domain="Bücher.de")] == [
        "dora@xn--bcher-kva.de"
    ]


# --- removal ----------------------------------------------------------------------------------------
def test_remove_domain_rules(org: Directory) -> None:
    with pytest.raises(ConflictError, match="default domain"):
        org.remove_domain(OPERATOR, "contoso.postroom.test")
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    with pytest.raises(ConflictError, match="1 address"):
        org.remove_domain(OPERATOR, "contoso.com")
    org.remove_domain(OPERATOR, "pending.contoso.net")
    with pytest.raises(NotFoundError):
        org.get_domain(OPERATOR, "pending.contoso.net")
    org.remove_recipient(OPERATOR, "alice@contoso.com")
    org.remove_domain(OPERATOR, "contoso.com")
    assert [d.name for d in org.list_domains(OPERATOR, "contoso")] == ["contoso.postroom.test"]


def test_remove_recipient_frees_its_addresses_and_folders(org: Directory, database: Database) -> None:
    alice = org.add_mailbox(OPERATOR, "alice@contoso.com", aliases=["al@contoso.com"])
    org.remove_recipient(OPERATOR, "AL@contoso.com")
    with pytest.raises(NotFoundError, match="no recipient has the address"):
        org.get_recipient(OPERATOR, "alice@contoso.com")
    with database.read() as conn:
        assert conn.execute(select(folders).where(folders.c.mailbox_id == alice.id)).all() == []
        assert conn.execute(select(addresses).where(addresses.c.recipient_id == alice.id)).all() == []
    org.add_mailbox(OPERATOR, "al@contoso.com")
    with pytest.raises(NotFoundError):
        org.remove_recipient(OPERATOR, "alice@contoso.com")


def test_remove_tenant_removes_its_domains_and_recipients(
    org: Directory, database: Database, tmp_path: Path
) -> None:
    org.add_mailbox(OPERATOR, "alice@contoso.com")
    org.add_mailbox(OPERATOR, "carol@fabrikam.com")
    blobs = FileBlobStore(tmp_path / "blobs")
    domains = len(org.list_domains(OPERATOR, "contoso"))
    removal = remove_tenant(database, blobs, org, OPERATOR, "contoso", apply=True)
    assert (removal.domains, removal.recipients) == (domains, 1)
    assert [t.name for t in org.list_tenants(OPERATOR)] == ["fabrikam"]
    assert {d.tenant for d in org.list_domains(OPERATOR)} == {"fabrikam"}
    assert [r.primary_address for r in org.list_recipients(OPERATOR)] == ["carol@fabrikam.com"]
    with database.read() as conn:
        assert conn.execute(select(recipients.c.id)).scalars().all() == [
            org.get_recipient(OPERATOR, "carol@fabrikam.com").id
        ]
    org.add_tenant(OPERATOR, "contoso")
    org.add_domain(OPERATOR, "contoso.com", "contoso")  # the name is free again
    with pytest.raises(NotFoundError):
        remove_tenant(database, blobs, org, OPERATOR, "contoso-old", apply=True)


# --- passwords --------------------------------------------------------------------------------------
def test_argon2id_password_check(org: Directory, database: Database) -> None:
    alice = org.add_mailbox(
        OPERATOR, "alice@contoso.com", password="correct horse", aliases=["al@contoso.com"]
    )
    org.add_mailbox(OPERATOR, "bob@contoso.com")
    assert alice.has_password
    with database.read() as conn:
        stored = conn.execute(
            select(recipients.c.password_hash).where(recipients.c.id == alice.id)
        ).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    cases = [
        ("alice@contoso.com", "correct horse", True),
        ("ALICE@contoso.com", "correct horse", True),
        ("al@contoso.com", "correct horse", True),
        ("alice@contoso.com", "Correct horse", False),
        ("alice@contoso.com", "", False),
        ("bob@contoso.com", "", False),  # no password set
        ("bob@contoso.com", "correct horse", False),
        ("nobody@contoso.com", "correct horse", False),
    ]
    assert [org.check_password(a, p) for a, p, _ in cases] == [expected for _, _, expected in cases]
    org.set_recipient(OPERATOR, "alice@contoso.com", password="battery staple")
    assert not org.check_password("alice@contoso.com", "correct horse")
    assert org.check_password("alice@contoso.com", "battery staple")
    with pytest.raises(InvalidInputError, match="password is empty"):
        org.set_recipient(OPERATOR, "alice@contoso.com", password="")
