"""Protection policies and mailboxes' safe and blocked senders: as an admin sets them, as mail flow
reads them (straight and through the node's cache) and picks one per recipient, and never across
tenants (another tenant's admin, or a new tenant that reuses a removed one's names)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from postroom.app import remove_tenant
from postroom.directory import (
    MAX_IP_ENTRIES,
    MAX_SENDER_ENTRIES,
    AntiMalwareChange,
    AntiSpamChange,
    CachedDirectory,
    ConflictError,
    ConnectionChange,
    ConnectionView,
    Directory,
    InvalidInputError,
    NotFoundError,
    PolicyChange,
    PolicyKind,
    ProtectionPolicy,
    RefusedError,
    SenderListName,
)
from postroom.model.policy import (
    AntiMalwarePolicy,
    AntiSpamPolicy,
    ConnectionPolicy,
    MailboxSenderLists,
    SenderList,
    TenantProtection,
)
from postroom.model.scope import OPERATOR, TenantScope
from postroom.model.verdicts import FilterAction
from postroom.storage import Database, FileBlobStore
from postroom.storage.schema import protection_policies
from tests.support.records import Org, populate

SPAM = PolicyKind.ANTISPAM
MALWARE = PolicyKind.ANTIMALWARE
A = FilterAction
SAFE, BLOCKED = SenderListName.SAFE, SenderListName.BLOCKED


@pytest.fixture
def org(directory: Directory) -> Org:
    return populate(directory)


def loaded(database: Database, tenant_id: int) -> TenantProtection:
    with database.read() as conn:
        return ConnectionView(conn).protection(tenant_id)


def add(directory: Directory, name: str, kind: PolicyKind = SPAM, **change: Any) -> ProtectionPolicy:
    return directory.add_protection_policy(OPERATOR, "contoso", kind, name, PolicyChange(**change))


def order(directory: Directory, kind: PolicyKind = SPAM) -> list[tuple[str, int | None]]:
    return [(p.name, p.policy.priority) for p in directory.protection_policies(OPERATOR, "contoso", kind)]


# --- the Default ------------------------------------------------------------------------------------
def test_every_tenant_starts_with_the_default_policies(
    database: Database, directory: Directory, org: Org
) -> None:
    assert loaded(database, org.contoso) == TenantProtection(org.contoso)
    for kind, default in ((SPAM, AntiSpamPolicy()), (MALWARE, AntiMalwarePolicy())):
        [only] = directory.protection_policies(OPERATOR, "contoso", kind)
        assert (only.name, only.is_default, only.enabled, only.policy) == ("Default", True, True, default)
    assert directory.connection_filter(OPERATOR, "contoso").policy == ConnectionPolicy()
    assert directory.junk_senders(OPERATOR, "alice@contoso.com").lists == MailboxSenderLists()


def test_set_on_the_default_changes_the_tenants_defaults_and_stores_only_what_differs(
    database: Database, directory: Directory, org: Org
) -> None:
    changed = directory.set_protection_policy(
        OPERATOR,
        "contoso",
        SPAM,
        "default",
        PolicyChange(settings=AntiSpamChange(spam_action=A.QUARANTINE, bulk_threshold=5, honor_dmarc=True)),
    )
    assert changed.is_default
    expected = AntiSpamPolicy(spam_action=A.QUARANTINE, bulk_threshold=5, honor_dmarc=True)
    assert changed.policy == expected
    assert loaded(database, org.contoso).antispam_default == expected
    assert loaded(database, org.fabrikam).antispam_default == AntiSpamPolicy(), (
        "another tenant's is untouched"
    )
    with database.read() as conn:
        stored = conn.execute(select(protection_policies.c.settings)).scalar_one()
    assert json.loads(stored) == {"spam_action": "quarantine", "bulk_threshold": 5, "honor_dmarc": True}
    directory.set_protection_policy(
        OPERATOR,
        "contoso",
        MALWARE,
        "Default",
        PolicyChange(settings=AntiMalwareChange(file_types=[".EXE", "js"])),
    )
    assert loaded(database, org.contoso).antimalware_default.file_types == ("exe", "js")


def test_the_default_cannot_be_removed_disabled_renamed_moved_or_filtered(
    directory: Directory, org: Org
) -> None:
    with pytest.raises(RefusedError, match="cannot be removed"):
        directory.remove_protection_policy(OPERATOR, "contoso", SPAM, "Default")
    with pytest.raises(RefusedError, match="always on"):
        directory.enable_protection_policy(OPERATOR, "contoso", SPAM, "Default", False)
    for change in (PolicyChange(name="Other"), PolicyChange(priority=0)):
        with pytest.raises(InvalidInputError, match="runs last"):
            directory.set_protection_policy(OPERATOR, "contoso", SPAM, "Default", change)
    with pytest.raises(InvalidInputError, match="no recipient filters"):
        directory.set_protection_policy(
            OPERATOR, "contoso", SPAM, "Default", PolicyChange(users=["bob@contoso.com"])
        )
    with pytest.raises(InvalidInputError, match="built-in anti-spam policy"):
        add(directory, "DEFAULT", users=["bob@contoso.com"])


# --- custom policies: CRUD and priorities -------------------------------------------------------------
def test_custom_policies_are_added_changed_renamed_and_removed(
    database: Database, directory: Directory, org: Org
) -> None:
    added = add(
        directory, "Execs", users=["bob@contoso.com"], settings=AntiSpamChange(spam_action=A.QUARANTINE)
    )
    assert (added.name, added.policy.priority, added.enabled) == ("Execs", 0, True)
    assert added.policy.recipients.users == {"bob@contoso.com"}
    with pytest.raises(ConflictError, match="already has an anti-spam policy named Execs"):
        add(directory, "execs", users=["bob@contoso.com"])
    assert add(directory, "Execs", MALWARE, domains=["contoso.com"]).policy.priority == 0, (
        "names are per kind"
    )

    changed = directory.set_protection_policy(
        OPERATOR,
        "contoso",
        SPAM,
        "EXECS",
        PolicyChange(name="Leaders", domains=["contoso.com"], settings=AntiSpamChange(phish_action=A.JUNK)),
    )
    assert changed.name == "Leaders"
    assert changed.policy.recipients.users == {"bob@contoso.com"}, "a filter not given stays"
    assert changed.policy.recipients.domains == {"contoso.com"}
    assert (changed.policy.spam_action, changed.policy.phish_action) == (A.QUARANTINE, A.JUNK)
    assert directory.get_protection_policy(OPERATOR, "contoso", SPAM, "leaders") == changed
    with pytest.raises(NotFoundError, match="no anti-spam policy 'Execs'"):
        directory.get_protection_policy(OPERATOR, "contoso", SPAM, "Execs")
    cleared = directory.set_protection_policy(OPERATOR, "contoso", SPAM, "Leaders", PolicyChange(users=[]))
    assert not cleared.policy.recipients.users and cleared.policy.recipients.domains == {"contoso.com"}
    with pytest.raises(InvalidInputError, match="at least one recipient filter"):
        directory.set_protection_policy(OPERATOR, "contoso", SPAM, "Leaders", PolicyChange(domains=[]))

    directory.remove_protection_policy(OPERATOR, "contoso", SPAM, "leaders")
    assert order(directory) == [("Default", None)]
    assert loaded(database, org.contoso).antispam == ()
    assert [p.name for p in loaded(database, org.contoso).antimalware] == ["Execs"]


def test_a_custom_policy_needs_a_filter_and_a_good_name(directory: Directory, org: Org) -> None:
    with pytest.raises(InvalidInputError, match="at least one recipient filter"):
        add(directory, "Nobody")
    for name in ("", "   ", "x" * 65, "bad\nname"):
        with pytest.raises(InvalidInputError, match="1 to 64 printable characters"):
            add(directory, name, users=["bob@contoso.com"])
    assert order(directory) == [("Default", None)], "nothing was written"


def test_priorities_are_renumbered_like_exchange(directory: Directory, org: Org) -> None:
    for name in ("a", "b", "c"):
        add(directory, name, domains=["contoso.com"])
    assert order(directory) == [("a", 0), ("b", 1), ("c", 2), ("Default", None)]
    add(directory, "new", domains=["contoso.com"], priority=1)  # inserted at an occupied priority
    assert order(directory) == [("a", 0), ("new", 1), ("b", 2), ("c", 3), ("Default", None)]
    directory.set_protection_policy(OPERATOR, "contoso", SPAM, "c", PolicyChange(priority=0))
    assert order(directory) == [("c", 0), ("a", 1), ("new", 2), ("b", 3), ("Default", None)]
    directory.set_protection_policy(OPERATOR, "contoso", SPAM, "c", PolicyChange(priority=3))
    assert order(directory) == [("a", 0), ("new", 1), ("b", 2), ("c", 3), ("Default", None)]
    directory.remove_protection_policy(OPERATOR, "contoso", SPAM, "new")
    assert order(directory) == [("a", 0), ("b", 1), ("c", 2), ("Default", None)]
    with pytest.raises(InvalidInputError, match=r"give 0 \(highest\) to 3"):
        add(directory, "far", domains=["contoso.com"], priority=4)
    with pytest.raises(InvalidInputError, match=r"give 0 \(highest\) to 2"):
        directory.set_protection_policy(OPERATOR, "contoso", SPAM, "a", PolicyChange(priority=3))
    with pytest.raises(InvalidInputError, match=r"give 0 \(highest\) to 3"):
        add(directory, "neg", domains=["contoso.com"], priority=-1)
    assert order(directory, MALWARE) == [("Default", None)], "each kind has its own priorities"


# --- choosing the policy for a recipient --------------------------------------------------------------
def test_the_first_matching_enabled_policy_by_priority_wins_and_the_default_takes_the_rest(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.add_group(OPERATOR, "sales@contoso.com", members=["bob@contoso.com"])
    add(directory, "alice", users=["alice@contoso.com", "partner@contoso.com"])  # OR within a filter
    add(directory, "team-relay", groups=["team@contoso.com"], domains=["relay.contoso.com"])  # AND across
    add(directory, "sales-or-team", groups=["sales@contoso.com", "team@contoso.com"])
    add(directory, "relay", domains=["relay.contoso.com"])
    protection = loaded(database, org.contoso)

    def chosen(recipient: str, *groups: str) -> str:
        return protection.antispam_for(recipient, groups).name

    assert chosen("alice@contoso.com") == "alice"
    assert chosen("AL@contoso.com") == "alice", "any of the user's addresses, any case"
    assert chosen("partner@contoso.com") == "alice"
    assert chosen("bob@contoso.com") == "sales-or-team", "a member of the group, named by its own address"
    assert chosen("bob@contoso.com", "sales@contoso.com") == "sales-or-team"
    assert chosen("carol@contoso.com") == "Default"
    assert chosen("x@relay.contoso.com", "team@contoso.com") == "team-relay", "in the group AND the domain"
    assert chosen("x@relay.contoso.com") == "relay"
    assert chosen("y@contoso.com", "team@contoso.com") == "sales-or-team", "the domain filter is not met"
    assert protection.antimalware_for("alice@contoso.com").name == "Default"

    directory.enable_protection_policy(OPERATOR, "contoso", SPAM, "alice", False)
    protection = loaded(database, org.contoso)
    assert chosen("alice@contoso.com") == "sales-or-team", "a disabled policy applies to no one"
    [disabled] = [p for p in directory.protection_policies(OPERATOR, "contoso", SPAM) if p.name == "alice"]
    assert (disabled.enabled, disabled.policy.priority) == (False, 0), "it keeps its priority"
    directory.enable_protection_policy(OPERATOR, "contoso", SPAM, "alice", True)
    assert loaded(database, org.contoso).antispam_for("al@contoso.com").name == "alice"


def test_a_group_filter_reaches_nested_members_and_follows_membership(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.add_group(OPERATOR, "all@contoso.com", members=["team@contoso.com"])  # team: alice, bob
    add(directory, "everyone", groups=["all@contoso.com"])
    assert loaded(database, org.contoso).antispam_for("al@contoso.com").name == "everyone"
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.protection(org.contoso).antispam_for("bob@contoso.com").name == "everyone"
    directory.set_recipient(OPERATOR, "team@contoso.com", remove_members=["bob@contoso.com"])
    cache.refresh()
    assert cache.protection(org.contoso).antispam_for("bob@contoso.com").name == "Default"
    assert cache.protection(org.contoso).antispam_for("alice@contoso.com").name == "everyone"


def test_a_filter_follows_its_recipient_and_a_removed_one_widens_nothing(
    database: Database, directory: Directory, org: Org
) -> None:
    add(directory, "bob", users=["bob@contoso.com"], settings=AntiSpamChange(spam_action=A.DELETE))
    directory.set_recipient(
        OPERATOR, "bob@contoso.com", add_aliases=["robert@contoso.com"], primary="robert@contoso.com"
    )
    assert loaded(database, org.contoso).antispam_for("robert@contoso.com").name == "bob"
    [shown, _] = directory.protection_policies(OPERATOR, "contoso", SPAM)
    assert shown.policy.recipients.users == {"robert@contoso.com"}, "shown by its primary address"
    directory.remove_recipient(OPERATOR, "bob@contoso.com")
    protection = loaded(database, org.contoso)
    for anyone in ("alice@contoso.com", "bob@contoso.com", "robert@contoso.com"):
        assert protection.antispam_for(anyone).name == "Default"


# --- validation ----------------------------------------------------------------------------------
SETTINGS_REFUSED: list[tuple[AntiSpamChange | AntiMalwareChange, str]] = [
    (
        AntiSpamChange(high_confidence_phish_action=A.JUNK),
        "high confidence phish action can only be quarantine",
    ),
    (AntiSpamChange(high_confidence_phish_action=A.REDIRECT), "can only be quarantine"),
    (AntiSpamChange(phish_action=A.INBOX), "phish action cannot be inbox; choose one of: junk, quarantine"),
    (AntiSpamChange(spam_action=A.INBOX), "spam action cannot be inbox"),
    (AntiSpamChange(spam_action=A.REJECT), "spam action cannot be reject"),
    (AntiSpamChange(high_confidence_spam_action=A.INBOX), "high confidence spam action cannot be inbox"),
    (AntiSpamChange(spoof_action=A.DELETE), "spoof action cannot be delete; choose one of: junk, quarantine"),
    (AntiSpamChange(dmarc_reject_action=A.JUNK), "dmarc reject action cannot be junk"),
    (AntiSpamChange(dmarc_quarantine_action=A.REJECT), "dmarc quarantine action cannot be reject"),
    (AntiSpamChange(spam_action=A.REDIRECT), "the spam action is redirect: give the address"),
    (AntiSpamChange(redirect_to="not an address"), "not a valid address"),
    (AntiSpamChange(quarantine_retention_days=0), r"give 1 to 30"),
    (AntiSpamChange(quarantine_retention_days=31), r"give 1 to 30"),
    (AntiSpamChange(bulk_threshold=0), "bulk threshold 0 is out of range: give 1 to 9"),
    (AntiSpamChange(bulk_threshold=10), "bulk threshold 10"),
    (AntiSpamChange(junk_threshold=10), "junk threshold 10"),
    (AntiSpamChange(subject_prefix=""), "subject prefix is 1 to 255"),
    (AntiSpamChange(subject_prefix="[SPAM]\r\nBcc: x@y"), "subject prefix"),
    (AntiSpamChange(trusted_arc_sealers=["not a domain"]), "not an ARC sealer domain"),
    (AntiSpamChange(allowed_senders=["example.com"]), "not an address; give allowed senders as local@domain"),
    (AntiSpamChange(blocked_domains=["bad domain"]), "not blocked sender domains"),
    (AntiSpamChange(allowed_senders=[f"u{i}@example.com" for i in range(1025)]), "at most 1024"),
    (AntiMalwareChange(file_action=A.JUNK), "file action cannot be junk; choose one of: quarantine, reject"),
    (AntiMalwareChange(file_types=["exe", "../etc"]), "not a file type"),
    (AntiMalwareChange(quarantine_retention_days=99), r"give 1 to 30"),
]


@pytest.mark.parametrize(("change", "message"), SETTINGS_REFUSED, ids=[m for _, m in SETTINGS_REFUSED])
def test_settings_are_checked_on_write_with_what_to_do(
    database: Database,
    directory: Directory,
    org: Org,
    change: AntiSpamChange | AntiMalwareChange,
    message: str,
) -> None:
    kind = SPAM if isinstance(change, AntiSpamChange) else MALWARE
    with pytest.raises(InvalidInputError, match=message):
        directory.set_protection_policy(OPERATOR, "contoso", kind, "Default", PolicyChange(settings=change))
    with pytest.raises(InvalidInputError, match=message):
        add(directory, "p", kind, domains=["contoso.com"], settings=change)
    assert loaded(database, org.contoso) == TenantProtection(org.contoso), "nothing was written"


def test_allowed_settings_are_stored_in_their_normal_form(
    database: Database, directory: Directory, org: Org
) -> None:
    change = AntiSpamChange(
        spam_action=A.REDIRECT,
        redirect_to="Review@Contoso.com",
        high_confidence_spam_action=A.PREPEND_SUBJECT,
        phish_action=A.X_HEADER,
        bulk_action=A.INBOX,  # bulk may be "no action"
        spoof_action=A.QUARANTINE,
        x_header="X-Contoso-Spam",
        subject_prefix="[junk?] ",
        quarantine_retention_days=15,
        junk_threshold=6,
        mark_bulk_as_spam=False,
        allowed_senders=["Friend@Partner.example"],
        allowed_domains=["@Partner.example", "bücher.example"],
        blocked_senders=["spam@bad.example"],
        blocked_domains=["bad.example"],
        dmarc_reject_action=A.QUARANTINE,
        dmarc_quarantine_action=A.JUNK,
        trusted_arc_sealers=["Google.com", "lists.example.org"],
    )
    policy = add(directory, "all", domains=["contoso.com"], settings=change).policy
    assert isinstance(policy, AntiSpamPolicy)
    assert policy.redirect_to == "Review@contoso.com"
    assert policy.allowed == SenderList(
        frozenset({"friend@partner.example"}), frozenset({"partner.example", "xn--bcher-kva.example"})
    )
    assert policy.blocked == SenderList(frozenset({"spam@bad.example"}), frozenset({"bad.example"}))
    assert policy.trusted_arc_sealers == {"google.com", "lists.example.org"}
    assert (policy.bulk_action, policy.x_header, policy.subject_prefix) == (
        A.INBOX,
        "X-Contoso-Spam",
        "[junk?] ",
    )
    assert loaded(database, org.contoso).antispam == (policy,)
    with pytest.raises(InvalidInputError, match="redirect: give the address"):
        directory.set_protection_policy(
            OPERATOR, "contoso", SPAM, "all", PolicyChange(settings=AntiSpamChange(redirect_to=""))
        )


@pytest.mark.parametrize("name", ["X Spam", "X-Spam:", "", "X-Spàm", "X-" + "a" * 80])
def test_an_x_header_name_that_is_no_field_name_falls_back_like_exchange(
    directory: Directory, org: Org, name: str
) -> None:
    changed = directory.set_protection_policy(
        OPERATOR, "contoso", SPAM, "Default", PolicyChange(settings=AntiSpamChange(x_header=name))
    )
    assert isinstance(changed.policy, AntiSpamPolicy) and changed.policy.x_header == "X-This-Is-Spam"


def test_settings_of_the_other_kind_are_refused(directory: Directory, org: Org) -> None:
    with pytest.raises(InvalidInputError, match="not anti-malware settings"):
        directory.set_protection_policy(
            OPERATOR, "contoso", MALWARE, "Default", PolicyChange(settings=AntiSpamChange(bulk_threshold=5))
        )


def test_a_stored_value_this_version_cannot_read_falls_back_to_its_default(
    database: Database, directory: Directory, org: Org
) -> None:
    directory.set_protection_policy(
        OPERATOR, "contoso", SPAM, "Default", PolicyChange(settings=AntiSpamChange(bulk_threshold=5))
    )
    with database.write() as conn:
        conn.execute(
            update(protection_policies).values(
                settings=json.dumps({"bulk_threshold": 5, "spam_action": "teleport", "future_setting": 1})
            )
        )
    assert loaded(database, org.contoso).antispam_default == AntiSpamPolicy(bulk_threshold=5)


# --- recipient filters and tenants ---------------------------------------------------------------
def test_filters_name_only_the_tenants_own_recipients_and_domains(directory: Directory, org: Org) -> None:
    refused: list[tuple[dict[str, object], type[Exception], str]] = [
        (
            {"users": ["carol@fabrikam.com"]},
            NotFoundError,
            "no such recipient in this tenant: carol@fabrikam.com",
        ),
        (
            {"users": ["nobody@contoso.com"]},
            NotFoundError,
            "no such recipient in this tenant: nobody@contoso.com",
        ),
        ({"groups": ["carol@fabrikam.com"]}, NotFoundError, "no such recipient in this tenant"),
        (
            {"domains": ["fabrikam.com"]},
            NotFoundError,
            "fabrikam.com is not an accepted domain of this tenant",
        ),
        ({"domains": ["pending.example"]}, NotFoundError, "not an accepted domain of this tenant"),
        ({"domains": ["nowhere.example"]}, NotFoundError, "not an accepted domain of this tenant"),
        ({"users": ["team@contoso.com"]}, InvalidInputError, "is a group: give it as a group"),
        ({"groups": ["alice@contoso.com"]}, InvalidInputError, "is a mailbox, not a group"),
        ({"users": ["not-an-address"]}, InvalidInputError, "not a valid address"),
    ]
    for change, error, message in refused:
        with pytest.raises(error, match=message):
            add(directory, "p", **change)
    assert order(directory) == [("Default", None)]


def as_fabrikam(directory: Directory) -> TenantScope:
    return TenantScope(directory.get_tenant(OPERATOR, "fabrikam").id)


ATTEMPTS: list[tuple[str, Callable[[Directory, TenantScope], object]]] = [
    ("list", lambda d, s: d.protection_policies(s, "contoso", SPAM)),
    ("show", lambda d, s: d.get_protection_policy(s, "contoso", SPAM, "Execs")),
    ("show default", lambda d, s: d.get_protection_policy(s, "contoso", SPAM, "Default")),
    (
        "add",
        lambda d, s: d.add_protection_policy(
            s, "contoso", SPAM, "Mine", PolicyChange(domains=["fabrikam.com"])
        ),
    ),
    (
        "set",
        lambda d, s: d.set_protection_policy(
            s, "contoso", SPAM, "Execs", PolicyChange(settings=AntiSpamChange(spam_action=A.DELETE))
        ),
    ),
    (
        "set default",
        lambda d, s: d.set_protection_policy(
            s, "contoso", MALWARE, "Default", PolicyChange(settings=AntiMalwareChange(file_filter=False))
        ),
    ),
    ("remove", lambda d, s: d.remove_protection_policy(s, "contoso", SPAM, "Execs")),
    ("disable", lambda d, s: d.enable_protection_policy(s, "contoso", SPAM, "Execs", False)),
    ("connection", lambda d, s: d.connection_filter(s, "contoso")),
    (
        "open the ip allow list",
        lambda d, s: d.set_connection_filter(s, "contoso", ConnectionChange(ip_allow=["192.0.2.1"])),
    ),
    ("junk lists", lambda d, s: d.junk_senders(s, "alice@contoso.com")),
    (
        "junk add",
        lambda d, s: d.change_junk_senders(s, "alice@contoso.com", add=[(SAFE, "attacker@evil.example")]),
    ),
]


@pytest.mark.parametrize("attempt", [a for _, a in ATTEMPTS], ids=[name for name, _ in ATTEMPTS])
def test_another_tenant_cannot_read_or_change_the_policies(
    database: Database, directory: Directory, org: Org, attempt: Callable[[Directory, TenantScope], object]
) -> None:
    add(directory, "Execs", users=["alice@contoso.com"])
    before = loaded(database, org.contoso), directory.junk_senders(OPERATOR, "alice@contoso.com")
    with pytest.raises(NotFoundError):
        attempt(directory, as_fabrikam(directory))
    assert (loaded(database, org.contoso), directory.junk_senders(OPERATOR, "alice@contoso.com")) == before


def test_a_tenant_cannot_name_another_tenants_recipients_in_its_own_filters(
    directory: Directory, org: Org
) -> None:
    fabrikam = as_fabrikam(directory)
    for change in (
        PolicyChange(users=["alice@contoso.com"]),
        PolicyChange(users=["al@contoso.com"]),
        PolicyChange(groups=["team@contoso.com"]),
        PolicyChange(domains=["contoso.com"]),
        PolicyChange(domains=["fabrikam.com"], users=["bob@contoso.com"]),
    ):
        with pytest.raises(NotFoundError, match="this tenant"):
            directory.add_protection_policy(fabrikam, "fabrikam", SPAM, "probe", change)
    mine = directory.add_protection_policy(
        fabrikam, "fabrikam", SPAM, "mine", PolicyChange(users=["carol@fabrikam.com"])
    )
    assert mine.policy.recipients.users == {"carol@fabrikam.com"}
    assert [p.name for p in directory.protection_policies(fabrikam, "fabrikam", SPAM)] == ["mine", "Default"]
    assert order(directory) == [("Default", None)]


def test_a_tenant_reusing_a_removed_tenants_names_sees_only_defaults(
    database: Database, directory: Directory, org: Org, tmp_path: Path
) -> None:
    fabrikam = as_fabrikam(directory)
    directory.add_protection_policy(
        fabrikam, "fabrikam", SPAM, "carol", PolicyChange(users=["carol@fabrikam.com"])
    )
    directory.set_protection_policy(
        fabrikam, "fabrikam", MALWARE, "Default", PolicyChange(settings=AntiMalwareChange(file_filter=False))
    )
    directory.set_connection_filter(fabrikam, "fabrikam", ConnectionChange(ip_allow=["203.0.113.0/24"]))
    directory.change_junk_senders(fabrikam, "carol@fabrikam.com", add=[(SAFE, "friend@example.org")])
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.protection(org.fabrikam).connection.ip_allow == ("203.0.113.0/24",)

    remove_tenant(database, FileBlobStore(tmp_path / "blobs"), directory, OPERATOR, "fabrikam", apply=True)
    with database.read() as conn:
        assert conn.execute(select(protection_policies.c.id)).all() == [], "the rows went with the tenant"
    new = directory.add_tenant(OPERATOR, "fabrikam")
    directory.add_domain(OPERATOR, "fabrikam.com", "fabrikam", verified=True)
    carol = directory.add_mailbox(OPERATOR, "carol@fabrikam.com")
    cache.refresh()
    assert cache.protection(new.id) == TenantProtection(new.id)
    assert cache.sender_lists(carol.id) == MailboxSenderLists()
    scope = TenantScope(new.id)
    assert [p.name for p in directory.protection_policies(scope, "fabrikam", SPAM)] == ["Default"]
    assert (
        directory.get_protection_policy(scope, "fabrikam", MALWARE, "Default").policy == AntiMalwarePolicy()
    )
    assert directory.connection_filter(scope, "fabrikam").policy == ConnectionPolicy()
    assert directory.junk_senders(scope, "carol@fabrikam.com").lists == MailboxSenderLists()


# --- the connection filter ------------------------------------------------------------------------
def test_ip_lists_take_addresses_ranges_and_networks_in_their_normal_form(
    database: Database, directory: Directory, org: Org
) -> None:
    changed = directory.set_connection_filter(
        OPERATOR,
        "contoso",
        ConnectionChange(
            ip_allow=[
                " 192.0.2.7 ",
                "198.51.100.10-198.51.100.20",
                "203.0.113.0/24",
                "192.0.2.9/32",
                "2001:DB8::1",
            ],
            ip_block=["2001:db8:1::/48", "2001:db8::5-2001:db8::9", "198.51.100.1-198.51.100.1", "192.0.2.7"],
        ),
    )
    expected = ConnectionPolicy(
        ip_allow=("192.0.2.7", "198.51.100.10-198.51.100.20", "203.0.113.0/24", "192.0.2.9", "2001:db8::1"),
        ip_block=("2001:db8:1::/48", "2001:db8::5-2001:db8::9", "198.51.100.1", "192.0.2.7"),
    )
    assert changed.policy == expected
    assert loaded(database, org.contoso).connection == expected
    changed = directory.set_connection_filter(
        OPERATOR,
        "contoso",
        ConnectionChange(add_ip_allow=["203.0.113.0/24", "192.0.2.200"], remove_ip_block=["192.0.2.7/32"]),
    )
    assert changed.policy.ip_allow == (*expected.ip_allow, "192.0.2.200"), "an entry is listed once"
    assert "192.0.2.7" not in changed.policy.ip_block
    with pytest.raises(NotFoundError, match=r"192\.0\.2\.8 is not on the IP Block list of tenant contoso"):
        directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(remove_ip_block=["192.0.2.8"]))
    cleared = directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(ip_allow=[], ip_block=[]))
    assert cleared.policy == ConnectionPolicy()
    assert loaded(database, org.fabrikam).connection == ConnectionPolicy()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("192.0.2.0/23", "wider than a /24; list several networks, or use a mail flow rule"),
        ("2001:db8::/47", "wider than a /48"),
        ("192.0.2.5/24", "has host bits set: write 192.0.2.0/24"),
        ("192.0.2.0-192.0.3.0", "wider than a /24"),
        ("192.0.2.9-192.0.2.1", "ends before it starts"),
        ("192.0.2.1-2001:db8::1", "mixes IPv4 and IPv6"),
        ("mail.example.com", "not an IP entry: write an address"),
        ("192.0.2.256", "not an IP entry"),
        ("192.0.2.0/33", "not an IP entry"),
        ("fe80::1%eth0", "not an IP entry"),
        ("", "not an IP entry"),
    ],
)
def test_a_bad_ip_entry_is_refused_with_what_to_write(
    directory: Directory, org: Org, entry: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(ip_block=["192.0.2.1", entry]))
    assert directory.connection_filter(OPERATOR, "contoso").policy == ConnectionPolicy()


def test_an_ip_list_holds_at_most_1273_entries(directory: Directory, org: Org) -> None:
    entries = [f"10.{i // 256}.{i % 256}.1" for i in range(MAX_IP_ENTRIES)]
    full = directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(ip_allow=entries))
    assert len(full.policy.ip_allow) == MAX_IP_ENTRIES
    with pytest.raises(InvalidInputError, match="at most 1273"):
        directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(add_ip_allow=["192.0.2.1"]))


# --- mailboxes' safe and blocked senders ----------------------------------------------------------------
def test_a_mailbox_keeps_safe_and_blocked_senders(directory: Directory, org: Org) -> None:
    lists = directory.change_junk_senders(
        OPERATOR,
        "AL@contoso.com",  # any of its addresses
        add=[
            (SAFE, "Friend@Example.org"),
            (SAFE, "@partner.example"),
            (BLOCKED, "spam.example"),
            (SAFE, "friend@example.org"),
        ],
    )
    assert lists.mailbox == "alice@contoso.com"
    assert lists.lists == MailboxSenderLists(
        safe=SenderList(frozenset({"friend@example.org"}), frozenset({"partner.example"})),
        blocked=SenderList(frozenset(), frozenset({"spam.example"})),
    )
    assert lists.lists.safe.matches("someone@mail.partner.example") and lists.lists.blocked.matches(
        "x@spam.example"
    )
    with pytest.raises(
        ConflictError, match=r"is on the safe senders of alice@contoso\.com; remove it there first"
    ):
        directory.change_junk_senders(OPERATOR, "alice@contoso.com", add=[(BLOCKED, "friend@example.org")])
    with pytest.raises(NotFoundError, match=r"spam\.example is not on the safe senders"):
        directory.change_junk_senders(OPERATOR, "alice@contoso.com", remove=[(SAFE, "spam.example")])
    moved = directory.change_junk_senders(
        OPERATOR,
        "alice@contoso.com",
        remove=[(SAFE, "friend@example.org")],
        add=[(BLOCKED, "friend@example.org")],
    )
    assert moved.lists.blocked.addresses == {"friend@example.org"}
    assert directory.junk_senders(OPERATOR, "bob@contoso.com").lists == MailboxSenderLists()
    for entry in ("not an entry", "@", "a@b@"):
        with pytest.raises(InvalidInputError):
            directory.change_junk_senders(OPERATOR, "bob@contoso.com", add=[(SAFE, entry)])
    with pytest.raises(InvalidInputError, match="only a mailbox has safe and blocked senders"):
        directory.junk_senders(OPERATOR, "team@contoso.com")


def test_a_junk_list_is_bounded(directory: Directory, org: Org) -> None:
    many = [(SAFE, f"s{i}@example.org") for i in range(MAX_SENDER_ENTRIES)]
    assert (
        len(directory.change_junk_senders(OPERATOR, "bob@contoso.com", add=many).lists.safe.addresses) == 1024
    )
    with pytest.raises(InvalidInputError, match="hold 1024 entries, the most allowed"):
        directory.change_junk_senders(OPERATOR, "bob@contoso.com", add=[(SAFE, "one-more@example.org")])
    directory.change_junk_senders(OPERATOR, "bob@contoso.com", add=[(BLOCKED, "one-more@example.org")])


# --- the node's cache ------------------------------------------------------------------------------
def test_the_cache_sees_each_change_after_refresh(database: Database, directory: Directory, org: Org) -> None:
    cache = CachedDirectory(database)
    cache.refresh()
    assert cache.protection(org.contoso) == TenantProtection(org.contoso)
    assert cache.sender_lists(org.alice) == MailboxSenderLists()
    held_fabrikam = cache.protection(org.fabrikam)

    add(directory, "alice", users=["alice@contoso.com"], settings=AntiSpamChange(spam_action=A.QUARANTINE))
    assert cache.protection(org.contoso) == TenantProtection(org.contoso), "held until the refresh"
    assert cache.refresh()
    assert cache.protection(org.contoso).antispam_for("alice@contoso.com").spam_action is A.QUARANTINE
    assert cache.protection(org.fabrikam) is held_fabrikam, "another tenant's entry stays"

    directory.set_connection_filter(OPERATOR, "contoso", ConnectionChange(ip_block=["192.0.2.66"]))
    cache.refresh()
    assert cache.protection(org.contoso).connection.ip_block == ("192.0.2.66",)

    directory.set_recipient(OPERATOR, "alice@contoso.com", add_aliases=["alicia@contoso.com"])
    cache.refresh()
    assert cache.protection(org.contoso).antispam_for("alicia@contoso.com").name == "alice", "a new alias"

    directory.change_junk_senders(OPERATOR, "alice@contoso.com", add=[(BLOCKED, "pest@example.org")])
    held_bob = cache.sender_lists(org.bob)
    cache.refresh()
    assert cache.sender_lists(org.alice).blocked.matches("PEST@example.org")
    assert cache.sender_lists(org.bob) is held_bob

    directory.remove_protection_policy(OPERATOR, "contoso", SPAM, "alice")
    cache.refresh()
    assert cache.protection(org.contoso).antispam == ()


def test_an_action_given_as_text_is_checked_too(directory: Directory, org: Org) -> None:
    """An adapter that passes what a client sent as text: an unknown action is refused with the choices."""
    change = AntiSpamChange(bulk_action="teleport")  # type: ignore[arg-type]
    with pytest.raises(
        InvalidInputError, match="'teleport' is not an action; the bulk action is one of: inbox, junk"
    ):
        directory.set_protection_policy(OPERATOR, "contoso", SPAM, "Default", PolicyChange(settings=change))
    as_text = AntiSpamChange(bulk_action="inbox")  # type: ignore[arg-type]
    changed = directory.set_protection_policy(
        OPERATOR, "contoso", SPAM, "Default", PolicyChange(settings=as_text)
    )
    assert isinstance(changed.policy, AntiSpamPolicy) and changed.policy.bulk_action is A.INBOX
