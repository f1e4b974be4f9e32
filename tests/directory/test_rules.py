"""The directory's rules as a user meets them: tenant names the service uses itself, domains that are
not a tenant's to accept, the password policy, group membership, and the cost of a login check."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from postroom.directory import (
    ConflictError,
    Directory,
    InvalidInputError,
    PasswordPolicy,
    RecipientKind,
)
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from tests.support.records import SERVICE_DOMAIN


@pytest.fixture
def service(database: Database) -> Directory:
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    return Directory(
        database,
        service_domain=SERVICE_DOMAIN,
        service_hosts=("mx1.postroom.test", "relay.protection.postroom.test", "spf.postroom.test"),
        password_hasher=hasher,
    )


# --- tenant names ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        *("mx", "protection", "spf", "mta-sts", "autodiscover", "autoconfig", "mail", "www", "admin"),
        *("postmaster", "smtp", "imap", "MX1", "relay"),
    ],
)
def test_tenants_cannot_take_the_services_own_names(service: Directory, name: str) -> None:
    with pytest.raises(InvalidInputError, match="a name the service uses itself"):
        service.add_tenant(OPERATOR, name)
    assert service.list_tenants(OPERATOR) == []


def test_an_ordinary_tenant_name_is_fine(service: Directory) -> None:
    assert service.add_tenant(OPERATOR, "mailroom").name == "mailroom"


# --- accepted domain names ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("[192.0.2.1]", "IP address"),
        ("192.0.2.1", "IP address"),
        ("2001:db8::1", "IP address"),
        ("[IPv6:2001:db8::1]", "IP address"),
        ("contoso", "single label"),
        ("localhost", "single label"),
        ("com", "single label"),
        ("co.uk", "public suffix"),
        ("github.io", "public suffix"),
        ("contoso.com.", "without the trailing dot"),
        ("postroom.test", "inside the service domain"),
        ("mail.protection.postroom.test", "inside the service domain"),
    ],
)
def test_domains_a_tenant_may_not_accept(service: Directory, name: str, rule: str) -> None:
    service.add_tenant(OPERATOR, "contoso")
    with pytest.raises(InvalidInputError, match=rule):
        service.add_domain(OPERATOR, name, "contoso")
    assert [d.name for d in service.list_domains(OPERATOR)] == ["contoso.postroom.test"]


def test_a_registrable_domain_under_a_public_suffix_is_fine(service: Directory) -> None:
    service.add_tenant(OPERATOR, "contoso")
    assert service.add_domain(OPERATOR, "contoso.co.uk", "contoso").name == "contoso.co.uk"


def test_subdomains_of_a_verified_domain_belong_to_its_tenant(service: Directory) -> None:
    service.add_tenant(OPERATOR, "contoso")
    service.add_tenant(OPERATOR, "fabrikam")
    service.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    with pytest.raises(
        InvalidInputError, match=r"only the tenant that owns contoso.com can add its subdomains"
    ):
        service.add_domain(OPERATOR, "sales.eu.contoso.com", "fabrikam")
    assert service.add_domain(OPERATOR, "sales.eu.contoso.com", "contoso").tenant == "contoso"
    # A pending (unproven) claim on a parent blocks no one.
    service.add_domain(OPERATOR, "fabrikam.com", "fabrikam")
    assert service.add_domain(OPERATOR, "hr.fabrikam.com", "contoso").tenant == "contoso"


# --- passwords ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "too short"),
        ("        ", "only spaces"),
        ("\t \u00a0\u2003\t   \t", "only spaces"),
        ("ALICE@contoso.com", "the mailbox's address"),
        ("alice@CONTOSO.COM", "the mailbox's address"),
        ("x" * 257, "too long"),
    ],
)
def test_the_password_policy_says_what_it_is(service: Directory, password: str, problem: str) -> None:
    service.add_tenant(OPERATOR, "contoso")
    service.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    with pytest.raises(InvalidInputError, match=problem) as refused:
        service.add_mailbox(OPERATOR, "alice@contoso.com", password=password)
    assert "8 to 256 characters" in str(refused.value)
    assert service.list_recipients(OPERATOR) == []


def test_the_local_part_is_not_a_password_and_the_policy_is_configurable(database: Database) -> None:
    strict = Directory(
        database,
        service_domain=SERVICE_DOMAIN,
        password_policy=PasswordPolicy(min_length=5, max_length=12),
        password_hasher=PasswordHasher(time_cost=1, memory_cost=64, parallelism=1),
    )
    strict.add_tenant(OPERATOR, "contoso")
    strict.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    strict.add_mailbox(OPERATOR, "bob@contoso.com")
    with pytest.raises(InvalidInputError, match="the mailbox's address"):
        strict.add_mailbox(OPERATOR, "alexander@contoso.com", password="Alexander")
    with pytest.raises(InvalidInputError, match="5 to 12 characters"):
        strict.set_recipient(OPERATOR, "bob@contoso.com", password="much-too-long-here")
    assert strict.add_mailbox(OPERATOR, "alice@contoso.com", password="s3cr3t").has_password


class CountingHasher(PasswordHasher):
    """The Argon2id hasher the directory is given, counting its verifications."""

    verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        CountingHasher.verifications += 1
        return super().verify(hash, password)


def test_a_login_check_costs_one_argon2_verification_whatever_the_address(database: Database) -> None:
    directory = Directory(
        database,
        service_domain=SERVICE_DOMAIN,
        password_hasher=CountingHasher(time_cost=1, memory_cost=64, parallelism=1),
    )
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    directory.add_mailbox(OPERATOR, "alice@contoso.com", password="correct horse")
    directory.add_mailbox(OPERATOR, "bob@contoso.com")  # no password
    directory.add_group(OPERATOR, "team@contoso.com", members=["bob@contoso.com"])
    for address, password, expected in [
        ("alice@contoso.com", "correct horse", True),
        ("alice@contoso.com", "wrong horse", False),
        ("nobody@contoso.com", "correct horse", False),
        ("nobody@nowhere.example", "x", False),
        ("bob@contoso.com", "", False),
        ("team@contoso.com", "anything", False),
        ("not an address", "x", False),
    ]:
        before = CountingHasher.verifications
        assert directory.check_password(address, password) is expected
        assert CountingHasher.verifications - before == 1, address


# --- group membership -----------------------------------------------------------------------------
@pytest.fixture
def org(service: Directory) -> Directory:
    service.add_tenant(OPERATOR, "contoso")
    service.add_domain(OPERATOR, "contoso.com", "contoso", verified=True)
    service.add_domain(OPERATOR, "relay.contoso.com", "contoso", verified=True)
    service.add_mailbox(OPERATOR, "alice@contoso.com")
    service.add_tenant(OPERATOR, "fabrikam")
    service.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    service.add_mailbox(OPERATOR, "carol@fabrikam.com")
    return service


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("ghost@contoso.com", "no recipient has the address ghost@contoso.com.*--allow-unknown"),
        ("ext@partner.example", "outside this tenant's accepted domains.*contact add"),
        ("carol@fabrikam.com", "outside this tenant's accepted domains"),
        ("nobody@fabrikam.com", "outside this tenant's accepted domains"),
    ],
)
def test_group_members_must_be_the_tenants_recipients(org: Directory, member: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        org.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com", member])
    org.add_group(OPERATOR, "team@contoso.com", members=["alice@contoso.com"])
    with pytest.raises(InvalidInputError, match=message):
        org.set_recipient(OPERATOR, "team@contoso.com", add_members=[member])
    assert org.get_recipient(OPERATOR, "team@contoso.com").members == ("alice@contoso.com",)


def test_unknown_members_in_own_domains_only_when_allowed(org: Directory) -> None:
    group = org.add_group(
        OPERATOR, "onprem@contoso.com", members=["dave@relay.contoso.com"], allow_unknown=True
    )
    assert group.members == ("dave@relay.contoso.com",)
    with pytest.raises(InvalidInputError, match="outside this tenant's accepted domains"):
        org.add_group(OPERATOR, "x@contoso.com", members=["ext@partner.example"], allow_unknown=True)
    org.add_contact(OPERATOR, "partner@contoso.com", external_address="ext@partner.example")
    assert (
        org.add_group(OPERATOR, "x@contoso.com", members=["partner@contoso.com"]).kind is RecipientKind.GROUP
    )


def test_a_group_cannot_contain_itself(org: Directory) -> None:
    with pytest.raises(ConflictError, match=r"self@contoso.com -> self@contoso.com"):
        org.add_group(OPERATOR, "self@contoso.com", members=["self@contoso.com"], allow_unknown=True)
    org.add_group(OPERATOR, "a@contoso.com", members=["alice@contoso.com"])
    org.add_group(OPERATOR, "b@contoso.com", members=["a@contoso.com"])
    org.add_group(OPERATOR, "c@contoso.com", members=["b@contoso.com"])
    with pytest.raises(
        ConflictError, match=r"a@contoso.com -> c@contoso.com -> b@contoso.com -> a@contoso.com"
    ):
        org.set_recipient(OPERATOR, "a@contoso.com", add_members=["c@contoso.com"])
    assert org.get_recipient(OPERATOR, "a@contoso.com").members == ("alice@contoso.com",)
