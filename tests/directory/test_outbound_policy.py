"""Remote domains, the external postmaster, the automatic forwarding policy and mailbox forwarding:
as an admin sets them, as mail flow reads them (straight and through the node's cache), and never
across tenants (another tenant, or a new tenant that reuses a removed one's names)."""

from __future__ import annotations

import pytest

from postroom.directory import (
    AutoForward,
    CachedDirectory,
    ConflictError,
    ConnectionView,
    Directory,
    InvalidInputError,
    MailboxForwarding,
    NotFoundError,
    RefusedError,
    RemoteDomainChange,
)
from postroom.model.outbound import ContentType, RemoteDomainSettings
from postroom.model.scope import OPERATOR, TenantScope
from postroom.storage import Database
from tests.support.records import Org, populate


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def view_of(database: Database, tenant_id: int, domain: str) -> RemoteDomainSettings:
    with database.read() as conn:
        return ConnectionView(conn).remote_domain(tenant_id, domain)


# --- remote domains ----------------------------------------------------------------------------
def test_every_tenant_has_the_default_which_holds_the_built_in_settings(
    directory: Directory, org: Org
) -> None:
    [default] = directory.remote_domains(OPERATOR, "contoso")
    assert (default.name, default.settings) == ("Default", RemoteDomainSettings())
    assert directory.remote_domain_for(org.contoso, "anywhere.example") == RemoteDomainSettings()
    assert directory.remote_domain_for(None, "anywhere.example") == RemoteDomainSettings()


@pytest.mark.parametrize(
    ("domain", "covered_by"),
    [
        ("example.com", "exact"),  # the exact pattern beats the wildcard of its parent
        ("a.example.com", "sub"),  # *.example.com covers the subdomains...
        ("a.b.example.com", "deeper"),  # ...the longest wildcard suffix wins
        ("x.b.example.com", "deeper"),
        ("b.example.com", "sub"),  # *.b.example.com covers b's subdomains, not b itself
        ("notexample.com", "*"),  # a suffix match needs the dot
        ("example.org", "*"),
    ],
)
def test_the_most_specific_pattern_wins(
    database: Database, directory: Directory, org: Org, domain: str, covered_by: str
) -> None:
    directory.add_remote_domain(OPERATOR, "contoso", "sub", "*.example.com", RemoteDomainChange(line_wrap=70))
    directory.add_remote_domain(OPERATOR, "contoso", "exact", "EXAMPLE.com", RemoteDomainChange(line_wrap=72))
    directory.add_remote_domain(
        OPERATOR, "contoso", "deeper", "*.b.example.com", RemoteDomainChange(line_wrap=74)
    )
    expected = {"exact": "example.com", "sub": "*.example.com", "deeper": "*.b.example.com", "*": "*"}
    assert directory.remote_domain_for(org.contoso, domain).pattern == expected[covered_by]
    assert view_of(database, org.contoso, domain).pattern == expected[covered_by]


def test_a_wildcard_does_not_cover_the_domain_itself(directory: Directory, org: Org) -> None:
    directory.add_remote_domain(OPERATOR, "contoso", "subs", "*.example.com", RemoteDomainChange(ndr=False))
    assert directory.remote_domain_for(org.contoso, "example.com").ndr is True
    assert directory.remote_domain_for(org.contoso, "mx.example.com").ndr is False


def test_settings_are_validated_with_what_to_do(directory: Directory, org: Org) -> None:
    cases = [
        ("bad", "exa mple.com", RemoteDomainChange(), "not a remote domain pattern"),
        ("bad", "a.*.example.com", RemoteDomainChange(), "not a remote domain pattern"),
        ("bad", "com", RemoteDomainChange(), "not a remote domain pattern"),
        ("bad", "*", RemoteDomainChange(), "built-in Default"),
        ("Default", "x.example", RemoteDomainChange(), "built-in remote domain"),
        ("wrap", "x.example", RemoteDomainChange(line_wrap=133), r"0 \(unlimited\) to 132"),
        ("wrap", "x.example", RemoteDomainChange(line_wrap=-1), r"0 \(unlimited\) to 132"),
        ("cs", "x.example", RemoteDomainChange(charset="klingon-8"), "character set 'klingon-8' is unknown"),
        ("ct", "x.example", RemoteDomainChange(content_type="rtf"), "content type 'rtf'"),
        ("oof", "x.example", RemoteDomainChange(oof_type="sometimes"), "out-of-office type"),
    ]
    for name, pattern, change, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            directory.add_remote_domain(OPERATOR, "contoso", name, pattern, change)
    assert [d.name for d in directory.remote_domains(OPERATOR, "contoso")] == ["Default"]  # nothing written
    added = directory.add_remote_domain(
        OPERATOR,
        "contoso",
        "partner",
        "x.example",
        RemoteDomainChange(line_wrap=132, charset="ISO-8859-1", content_type="mime-text", oof_type="none"),
    )
    assert added.settings == RemoteDomainSettings(
        pattern="x.example",
        line_wrap=132,
        charset="iso-8859-1",
        content_type=ContentType.MIME_TEXT,
        oof_type="none",
    )
    with pytest.raises(ConflictError):
        directory.add_remote_domain(OPERATOR, "contoso", "PARTNER", "y.example")
    with pytest.raises(ConflictError):
        directory.add_remote_domain(OPERATOR, "contoso", "other", "X.Example")


def test_the_default_can_be_changed_but_not_removed(directory: Directory, org: Org) -> None:
    changed = directory.set_remote_domain(
        OPERATOR, "contoso", "default", RemoteDomainChange(auto_forward=False)
    )
    assert changed.name == "Default" and changed.settings.auto_forward is False
    assert directory.remote_domain_for(org.contoso, "anywhere.example").auto_forward is False
    directory.set_remote_domain(OPERATOR, "contoso", "*", RemoteDomainChange(line_wrap=78))
    assert directory.get_remote_domain(OPERATOR, "contoso", "Default").settings.line_wrap == 78
    assert directory.remote_domain_for(org.contoso, "anywhere.example").auto_forward is False  # kept
    with pytest.raises(RefusedError, match="cannot be removed"):
        directory.remove_remote_domain(OPERATOR, "contoso", "Default")
    directory.add_remote_domain(OPERATOR, "contoso", "p", "p.example")
    directory.remove_remote_domain(OPERATOR, "contoso", "p")
    with pytest.raises(NotFoundError):
        directory.get_remote_domain(OPERATOR, "contoso", "p")


def test_remote_domains_belong_to_one_tenant(database: Database, directory: Directory, org: Org) -> None:
    directory.add_remote_domain(
        OPERATOR, "contoso", "partner", "partner.example", RemoteDomainChange(ndr=False)
    )
    fabrikam = TenantScope(org.fabrikam)
    for call in (
        lambda: directory.remote_domains(fabrikam, "contoso"),
        lambda: directory.get_remote_domain(fabrikam, "contoso", "partner"),
        lambda: directory.set_remote_domain(fabrikam, "contoso", "partner", RemoteDomainChange(ndr=True)),
        lambda: directory.remove_remote_domain(fabrikam, "contoso", "partner"),
        lambda: directory.add_remote_domain(fabrikam, "contoso", "mine", "mine.example"),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert directory.remote_domain_for(org.fabrikam, "partner.example").ndr is True
    assert view_of(database, org.fabrikam, "partner.example").ndr is True
    assert directory.remote_domain_for(org.contoso, "partner.example").ndr is False
    with pytest.raises(NotFoundError):
        directory.get_remote_domain(fabrikam, "fabrikam", "partner")


def test_a_new_tenant_with_a_removed_ones_name_inherits_nothing(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.add_remote_domain(
        OPERATOR, "fabrikam", "partner", "partner.example", RemoteDomainChange(ndr=False)
    )
    directory.set_remote_domain(OPERATOR, "fabrikam", "Default", RemoteDomainChange(auto_forward=False))
    directory.set_external_postmaster(OPERATOR, "fabrikam", "bounces@fabrikam.com")
    directory.set_auto_forward(OPERATOR, "fabrikam", "on")
    directory.set_forwarding(OPERATOR, "carol@fabrikam.com", "carol@elsewhere.example")
    with database.write() as conn:
        directory.delete_tenant(conn, OPERATOR, "fabrikam")
    new = directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    assert [(d.name, d.settings) for d in directory.remote_domains(OPERATOR, "fabrikam")] == [
        ("Default", RemoteDomainSettings())
    ]
    assert directory.remote_domain_for(new.id, "partner.example") == RemoteDomainSettings()
    settings = directory.outbound_settings(OPERATOR, "fabrikam")
    assert settings.external_postmaster == "postmaster@fabrikam.postroom.test"
    assert settings.auto_forward is AutoForward.AUTOMATIC
    assert directory.forwarding(TenantScope(new.id), "carol@fabrikam.com") is None


# --- organization: external postmaster, automatic forwarding -------------------------------------
def test_external_postmaster_defaults_to_the_default_domain(
    database: Database, directory: Directory, org: Org
) -> None:
    assert directory.external_postmaster(org.contoso) == "postmaster@contoso.postroom.test"
    directory.add_domain(OPERATOR, "contoso.org", "contoso", verified=True)
    directory.set_postmaster(OPERATOR, "contoso", "bob@contoso.com")  # the internal one is another setting
    assert directory.external_postmaster(org.contoso) == "postmaster@contoso.postroom.test"
    chosen = directory.set_external_postmaster(OPERATOR, "contoso", "No-Reply@Bounces.Contoso.com")
    assert chosen.external_postmaster == chosen.external_postmaster_chosen == "No-Reply@bounces.contoso.com"
    assert (
        directory.external_postmaster(org.contoso) == "No-Reply@bounces.contoso.com"
    )  # need not be a mailbox
    assert directory.postmaster(OPERATOR, "contoso").chosen == "bob@contoso.com"  # the other setting is kept
    assert directory.external_postmaster(org.fabrikam) == "postmaster@fabrikam.postroom.test"
    reset = directory.set_external_postmaster(OPERATOR, "contoso", "")
    assert (reset.external_postmaster, reset.external_postmaster_chosen) == (
        "postmaster@contoso.postroom.test",
        None,
    )
    with pytest.raises(InvalidInputError, match="not a valid address"):
        directory.set_external_postmaster(OPERATOR, "contoso", "not an address")
    assert directory.external_postmaster(None) == "postmaster@postroom.test"
    assert directory.external_postmaster(99_999) == "postmaster@postroom.test"  # a removed tenant
    with pytest.raises(NotFoundError):
        directory.set_external_postmaster(TenantScope(org.fabrikam), "contoso", "x@contoso.com")
    with pytest.raises(NotFoundError):
        directory.outbound_settings(TenantScope(org.fabrikam), "contoso")


def test_automatic_forwarding_is_off_until_turned_on(
    database: Database, directory: Directory, org: Org
) -> None:
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.auto_forward(org.contoso) is AutoForward.AUTOMATIC
    assert not AutoForward.AUTOMATIC.allows and not AutoForward.OFF.allows and AutoForward.ON.allows
    assert directory.set_auto_forward(OPERATOR, "contoso", " ON ").auto_forward is AutoForward.ON
    assert cache.auto_forward(org.contoso) is AutoForward.AUTOMATIC  # cached until the refresh
    cache.refresh()
    assert cache.auto_forward(org.contoso) is AutoForward.ON
    assert cache.auto_forward(org.fabrikam) is AutoForward.AUTOMATIC
    with pytest.raises(InvalidInputError, match="automatic, on, off"):
        directory.set_auto_forward(OPERATOR, "contoso", "sometimes")
    with pytest.raises(NotFoundError):
        directory.set_auto_forward(TenantScope(org.fabrikam), "contoso", "off")


def test_the_cache_drops_a_tenants_remote_domains_when_they_change(
    database: Database, directory: Directory, org: Org
) -> None:
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.remote_domain(org.contoso, "partner.example").auto_forward is True
    assert cache.in_memory().remote_domain(org.contoso, "x.partner.example").auto_forward is True  # held
    directory.add_remote_domain(
        OPERATOR, "contoso", "partner", "*.partner.example", RemoteDomainChange(auto_forward=False)
    )
    assert cache.refresh()
    assert cache.remote_domain(org.contoso, "x.partner.example").auto_forward is False
    assert cache.remote_domain(org.fabrikam, "x.partner.example").auto_forward is True


# --- mailbox forwarding --------------------------------------------------------------------------
def test_forwarding_is_set_shown_and_removed(database: Database, directory: Directory, org: Org) -> None:
    assert directory.forwarding(OPERATOR, "alice@contoso.com") is None
    assert directory.set_forwarding(OPERATOR, "al@contoso.com", "Alice@Home.example", keep_copy=True) == (
        MailboxForwarding("Alice@home.example", True)
    )
    assert directory.forwarding(TenantScope(org.contoso), "alice@contoso.com") == MailboxForwarding(
        "Alice@home.example", True
    )
    with database.read() as conn:
        assert ConnectionView(conn).forwarding(org.alice) == MailboxForwarding("Alice@home.example", True)
    assert directory.set_forwarding(OPERATOR, "alice@contoso.com", None) is None
    assert directory.forwarding(OPERATOR, "alice@contoso.com") is None


def test_forwarding_rules(directory: Directory, org: Org) -> None:
    with pytest.raises(InvalidInputError, match="own address"):
        directory.set_forwarding(OPERATOR, "alice@contoso.com", "AL@contoso.com")
    with pytest.raises(InvalidInputError, match="only a mailbox forwards"):
        directory.set_forwarding(OPERATOR, "team@contoso.com", "x@example.com")
    with pytest.raises(InvalidInputError, match="not a valid address"):
        directory.set_forwarding(OPERATOR, "alice@contoso.com", "x@@example.com")
    fabrikam = TenantScope(org.fabrikam)
    with pytest.raises(NotFoundError):
        directory.set_forwarding(fabrikam, "alice@contoso.com", "carol@fabrikam.com")
    with pytest.raises(NotFoundError):
        directory.forwarding(fabrikam, "alice@contoso.com")
    assert directory.forwarding(OPERATOR, "alice@contoso.com") is None


def test_the_cache_drops_a_mailboxs_forwarding_when_it_changes(
    database: Database, directory: Directory, org: Org
) -> None:
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.forwarding(org.alice) is None
    directory.set_forwarding(OPERATOR, "alice@contoso.com", "bob@contoso.com")
    assert cache.refresh()
    assert cache.forwarding(org.alice) == MailboxForwarding("bob@contoso.com", False)
    assert cache.in_memory().forwarding(org.alice) == MailboxForwarding("bob@contoso.com", False)
