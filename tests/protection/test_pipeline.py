"""The merge of verdicts into one disposition per recipient (spec §10.1 precedence, §10.4 actions)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from postroom.model.policy import (
    ADMIN_ONLY,
    FULL_ACCESS,
    AntiMalwarePolicy,
    AntiSpamPolicy,
    MailboxSenderLists,
    SenderList,
)
from postroom.model.verdicts import (
    ArcResult,
    ArcVerdict,
    AuthVerdict,
    CompAuthResult,
    ConnectionVerdict,
    Direction,
    DkimResult,
    DkimVerdict,
    DmarcAction,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    FilterAction,
    FilterVerdict,
    IpListing,
    MalwareResult,
    MalwareVerdict,
    MessageFacts,
    SpamCategory,
    SpamVerdict,
    SpfResult,
    SpfVerdict,
)
from postroom.protection.pipeline import Verdicts, decide, render_headers, x_header_name

PASS_AUTH = AuthVerdict(
    spf=SpfVerdict(SpfResult.PASS, "contoso.com", "mailfrom", "192.0.2.1"),
    dkim=(DkimVerdict(DkimResult.PASS, "contoso.com", "s1", "rsa-sha256"),),
    dmarc=DmarcVerdict(
        DmarcResult.PASS, "contoso.com", DmarcPolicy.REJECT, spf_aligned=True, dkim_aligned=True
    ),
    arc=ArcVerdict(ArcResult.NONE),
    compauth=CompAuthResult.PASS,
    compauth_reason=100,
    header="Authentication-Results: mx.postroom.test; spf=pass\r\n",
)
CLEAN = MalwareVerdict(MalwareResult.CLEAN, "builtin")


def dmarc_fail(policy: DmarcPolicy, action: DmarcAction) -> AuthVerdict:
    return replace(
        PASS_AUTH,
        dmarc=DmarcVerdict(DmarcResult.FAIL, "contoso.com", policy, action),
        compauth=CompAuthResult.FAIL,
        compauth_reason=0,
    )


def spam(scl: int, category: SpamCategory = SpamCategory.NONE, bcl: int = 0) -> SpamVerdict:
    return SpamVerdict(scl, bcl, category, "builtin")


def verdicts(
    auth: AuthVerdict = PASS_AUTH,
    malware: MalwareVerdict = CLEAN,
    files: MalwareVerdict | None = None,
    content: SpamVerdict | None = None,
    listing: IpListing = IpListing.NOT_LISTED,
) -> Verdicts:
    return Verdicts(
        auth, malware, files, content if content is not None else spam(1), ConnectionVerdict(listing)
    )


DEFAULT = AntiSpamPolicy()
MALWARE_DEFAULT = AntiMalwarePolicy()
NO_LISTS = MailboxSenderLists()

CASES = [
    # (name, verdicts, spam policy, mailbox lists, expected verdict, expected action, sfv)
    (
        "clean mail goes to the Inbox",
        verdicts(),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "NSPM",
    ),
    (
        "malware is quarantined, whatever else",
        verdicts(
            malware=MalwareVerdict(MalwareResult.INFECTED, "clamd", ("Eicar-Test-Signature",)),
            content=spam(9),
        ),
        DEFAULT,
        MailboxSenderLists(safe=SenderList(addresses=frozenset({"a@contoso.com"}))),
        FilterVerdict.MALWARE,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "a blocked file type is quarantined by default",
        verdicts(files=MalwareVerdict(MalwareResult.BLOCKED_FILE_TYPE, "attachment-filter", ("exe",))),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.MALWARE,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "SCL 5 is spam: Junk",
        verdicts(content=spam(5)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.SPAM,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "SCL 9 is high-confidence spam: Junk by default",
        verdicts(content=spam(9, SpamCategory.HIGH_CONFIDENCE_SPAM)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.HIGH_CONFIDENCE_SPAM,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "phish is quarantined by default",
        verdicts(content=spam(6, SpamCategory.PHISH)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.PHISH,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "high-confidence phish is quarantined even when the policy says Junk",
        verdicts(content=spam(9, SpamCategory.HIGH_CONFIDENCE_PHISH)),
        replace(DEFAULT, high_confidence_phish_action=FilterAction.JUNK),
        MailboxSenderLists(safe=SenderList(addresses=frozenset({"a@contoso.com"}))),
        FilterVerdict.HIGH_CONFIDENCE_PHISH,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "bulk over the threshold: the Bulk action",
        verdicts(content=spam(1, bcl=7)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.BULK,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "bulk under the threshold is clean",
        verdicts(content=spam(1, bcl=6)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "NSPM",
    ),
    (
        "a stricter bulk threshold catches BCL 5",
        verdicts(content=spam(1, bcl=5)),
        replace(DEFAULT, bulk_threshold=5),
        NO_LISTS,
        FilterVerdict.BULK,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "DMARC p=reject failure is marked spoof (oreject), not rejected, by default",
        verdicts(auth=dmarc_fail(DmarcPolicy.REJECT, DmarcAction.OREJECT)),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.SPOOF,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "a tenant that honours DMARC rejects p=reject failures",
        verdicts(auth=dmarc_fail(DmarcPolicy.REJECT, DmarcAction.REJECT)),
        replace(DEFAULT, honor_dmarc=True),
        NO_LISTS,
        FilterVerdict.SPOOF,
        FilterAction.REJECT,
        "SPM",
    ),
    (
        "p=quarantine honoured: quarantined",
        verdicts(auth=dmarc_fail(DmarcPolicy.QUARANTINE, DmarcAction.QUARANTINE)),
        replace(DEFAULT, honor_dmarc=True),
        NO_LISTS,
        FilterVerdict.SPOOF,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "pct sampled out: no action on the domain's behalf",
        verdicts(auth=dmarc_fail(DmarcPolicy.REJECT, DmarcAction.PCT_REJECT)),
        replace(DEFAULT, honor_dmarc=True),
        NO_LISTS,
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "NSPM",
    ),
    (
        "the mailbox's blocked sender: Junk, SFV:BLK",
        verdicts(),
        DEFAULT,
        MailboxSenderLists(blocked=SenderList(domains=frozenset({"contoso.com"}))),
        FilterVerdict.SPAM,
        FilterAction.JUNK,
        "BLK",
    ),
    (
        "the mailbox's safe sender skips spam filtering: SFV:SFE",
        verdicts(content=spam(6)),
        DEFAULT,
        MailboxSenderLists(safe=SenderList(addresses=frozenset({"a@contoso.com"}))),
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "SFE",
    ),
    (
        "a safe sender that fails authentication is not trusted",
        verdicts(auth=dmarc_fail(DmarcPolicy.NONE, DmarcAction.NONE), content=spam(6)),
        DEFAULT,
        MailboxSenderLists(safe=SenderList(addresses=frozenset({"a@contoso.com"}))),
        FilterVerdict.SPAM,
        FilterAction.JUNK,
        "SPM",
    ),
    (
        "the policy's blocked domain: high-confidence spam, SFV:SKB",
        verdicts(),
        replace(DEFAULT, blocked=SenderList(domains=frozenset({"contoso.com"}))),
        NO_LISTS,
        FilterVerdict.HIGH_CONFIDENCE_SPAM,
        FilterAction.JUNK,
        "SKB",
    ),
    (
        "the policy's allowed sender: SFV:SKA",
        verdicts(content=spam(6)),
        replace(DEFAULT, allowed=SenderList(addresses=frozenset({"a@contoso.com"}))),
        NO_LISTS,
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "SKA",
    ),
    (
        "an IP Allow skips spam filtering (SFV:SKN) but not malware",
        verdicts(content=spam(6), listing=IpListing.ALLOWED),
        DEFAULT,
        NO_LISTS,
        FilterVerdict.CLEAN,
        FilterAction.INBOX,
        "SKN",
    ),
    (
        "spam action quarantine",
        verdicts(content=spam(6)),
        replace(DEFAULT, spam_action=FilterAction.QUARANTINE),
        NO_LISTS,
        FilterVerdict.SPAM,
        FilterAction.QUARANTINE,
        "SPM",
    ),
    (
        "spam action delete",
        verdicts(content=spam(6)),
        replace(DEFAULT, spam_action=FilterAction.DELETE),
        NO_LISTS,
        FilterVerdict.SPAM,
        FilterAction.DELETE,
        "SPM",
    ),
]


@pytest.mark.parametrize(
    ("verdict_in", "spam_policy", "lists", "verdict", "action", "sfv"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    verdict_in: Verdicts,
    spam_policy: AntiSpamPolicy,
    lists: MailboxSenderLists,
    verdict: FilterVerdict,
    action: FilterAction,
    sfv: str,
) -> None:
    disposition = decide(
        verdict_in, spam_policy, MALWARE_DEFAULT, lists, sender="a@contoso.com", header_from="contoso.com"
    )
    assert (disposition.verdict, disposition.action, disposition.sfv) == (verdict, action, sfv)


def test_internal_mail_skips_anti_spam_but_not_malware() -> None:
    """A message internal to the recipient's tenant (an OnPremises connector that treats messages as
    internal): SKI whatever the content verdict, spoof or lists say; malware is still held."""
    for content, auth in (
        (spam(9, SpamCategory.HIGH_CONFIDENCE_SPAM), PASS_AUTH),
        (spam(1), dmarc_fail(DmarcPolicy.REJECT, DmarcAction.REJECT)),
    ):
        inside = replace(verdicts(auth=auth, content=content), internal=True)
        disposition = decide(
            inside,
            DEFAULT,
            MALWARE_DEFAULT,
            MailboxSenderLists(blocked=SenderList(addresses=frozenset({"a@contoso.com"}))),
            sender="a@contoso.com",
            header_from="contoso.com",
        )
        assert (disposition.verdict, disposition.action, disposition.sfv, disposition.scl) == (
            FilterVerdict.CLEAN,
            FilterAction.INBOX,
            "SKI",
            -1,
        )
    infected = replace(
        verdicts(malware=MalwareVerdict(MalwareResult.INFECTED, "clamd", ("Eicar",))), internal=True
    )
    held = decide(
        infected, DEFAULT, MALWARE_DEFAULT, NO_LISTS, sender="a@contoso.com", header_from="contoso.com"
    )
    assert held.action is FilterAction.QUARANTINE


def test_quarantine_access_follows_the_verdict() -> None:
    malware = decide(
        verdicts(malware=MalwareVerdict(MalwareResult.INFECTED, "clamd", ("Eicar",))),
        DEFAULT,
        MALWARE_DEFAULT,
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    assert (malware.access, malware.quarantine_reason) == (ADMIN_ONLY, "malware")
    phish = decide(
        verdicts(content=spam(9, SpamCategory.HIGH_CONFIDENCE_PHISH)),
        DEFAULT,
        MALWARE_DEFAULT,
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    assert (phish.access, phish.quarantine_reason) == (ADMIN_ONLY, "high-confidence-phish")
    spammy = decide(
        verdicts(content=spam(6)),
        replace(DEFAULT, spam_action=FilterAction.QUARANTINE, quarantine_retention_days=15),
        MALWARE_DEFAULT,
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    assert (spammy.access, spammy.quarantine_reason, spammy.retention_days) == (FULL_ACCESS, "spam", 15)


def test_a_file_type_reject_policy_refuses_with_an_ndr_reply() -> None:
    disposition = decide(
        verdicts(files=MalwareVerdict(MalwareResult.BLOCKED_FILE_TYPE, "attachment-filter", ("exe",))),
        DEFAULT,
        replace(MALWARE_DEFAULT, file_action=FilterAction.REJECT),
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    assert disposition.action is FilterAction.REJECT
    assert disposition.reply is not None and disposition.reply.enhanced == "5.7.1"


def test_x_header_and_prepend_subject_still_put_spam_in_junk() -> None:
    for action in (FilterAction.X_HEADER, FilterAction.PREPEND_SUBJECT):
        disposition = decide(
            verdicts(content=spam(6)),
            replace(DEFAULT, spam_action=action),
            MALWARE_DEFAULT,
            NO_LISTS,
            sender="a@contoso.com",
            header_from="contoso.com",
        )
        assert disposition.folder == "Junk"
    bulk = decide(
        verdicts(content=spam(1, bcl=8)),
        replace(DEFAULT, bulk_action=FilterAction.X_HEADER),
        MALWARE_DEFAULT,
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    assert bulk.folder == "Inbox" and bulk.x_header == "X-This-Is-Spam"


@pytest.mark.parametrize(
    ("name", "used"),
    [
        ("X-Contoso-Spam", "X-Contoso-Spam"),
        ("X Spam", "X-This-Is-Spam"),
        ("X:Spam", "X-This-Is-Spam"),
        ("", "X-This-Is-Spam"),
    ],
)
def test_an_invalid_x_header_name_falls_back(name: str, used: str) -> None:
    assert x_header_name(name) == used


def test_the_report_header_carries_the_fields_and_a_stranger_cannot_forge_one() -> None:
    facts = MessageFacts(
        client_ip="192.0.2.1",
        helo="evil;SCL:-1;SFV:SKA",
        mail_from="a@contoso.com",
        recipients=("b@fabrikam.com",),
        direction=Direction.INBOUND,
        ptr="mail.contoso.com",
    )
    disposition = decide(
        verdicts(content=spam(6)),
        DEFAULT,
        MALWARE_DEFAULT,
        NO_LISTS,
        sender="a@contoso.com",
        header_from="contoso.com",
    )
    text = render_headers(PASS_AUTH, disposition, spam(6, bcl=3), facts).decode()
    lines = text.split("\r\n")
    assert lines[0].startswith("Authentication-Results: mx.postroom.test;")
    report = next(line for line in lines if line.startswith("X-Postroom-Antispam-Report: "))
    fields = dict(item.split(":", 1) for item in report.split(": ", 1)[1].split(";") if item)
    assert fields["CIP"] == "192.0.2.1"
    assert fields["SCL"] == "6" and fields["SFV"] == "SPM" and fields["CAT"] == "SPM"
    assert fields["IPV"] == "NLI" and fields["DIR"] == "INB" and fields["PTR"] == "mail.contoso.com"
    assert fields["H"] == "evilSCL:-1SFV:SKA"  # the `;` are gone: one field, not three
    assert "X-Postroom-Antispam: BCL:3;" in lines
