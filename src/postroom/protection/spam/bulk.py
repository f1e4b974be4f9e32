"""Bulk detection: is a message a mass mailing, and how likely are its recipients to complain (BCL).

The spec's BCL (§10.4) is a sender's complaint level: 0 not bulk, 1-3 few complaints, 4-7 mixed, 8-9
many. Postroom has no complaint feed from millions of mailboxes; it estimates the level from what a
message shows, the same way for both spam engines (`bulk_level`):

1. Evidence that the message is bulk, in points: List-Unsubscribe 3, List-Id 2, Precedence
   bulk/list/junk 2, Feedback-ID 1, an email service provider's own header (Mailchimp, SendGrid,
   Amazon SES, Mailgun, Mailjet, Brevo, Salesforce MC, HubSpot, CSA ...) 1, a bulk mailer's X-Mailer 1,
   an "unsubscribe" in the text 1. Under 3 points the message is not bulk: BCL 0.
2. A bulk message starts at 4 (mixed) and moves by how its sender behaves:
   - one-click unsubscribe (RFC 8058 List-Unsubscribe-Post) -1; authenticated (DMARC pass, or a DKIM
     pass for the From domain, or SPF pass: a mailing list's server is itself) -1: the conduct of
     senders people rarely complain about;
   - no List-Unsubscribe at all +2; not authenticated +1; content the engine finds spammy +1;
   - the complaints users made about this sender (`learn` junk reports, keyed by List-Id or the From
     domain; only the built-in engine keeps them) +1 each, up to +4;
   and stays within 1-9.

So a signed newsletter with one-click unsubscribe is BCL 2, a mailing list 3-4, an unsigned mass
mailing without an unsubscribe link 7 (the Default policy's threshold).

Guarantees: a pure function of its arguments; reads at most the bounded text `parse_message` made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postroom.model.verdicts import DkimResult, DmarcResult, MessageFacts, SpfResult
from postroom.protection.mime import ParsedMessage

__all__ = ["BULK_POINTS", "Bulk", "bulk_level", "bulk_sender"]

BULK_POINTS = 3  # evidence at which a message counts as bulk
MAX_COMPLAINT_STEPS = 4

_ESP_HEADERS = frozenset(
    {
        "x-mc-user",  # Mailchimp
        "x-mandrill-user",
        "x-campaign",
        "x-campaignid",
        "x-sg-eid",  # SendGrid
        "x-sg-id",
        "x-ses-outgoing",  # Amazon SES
        "x-mailgun-sid",
        "x-mailgun-tag",
        "x-mailjet-campaign",
        "x-mj-mid",
        "x-mailin-campaign",  # Brevo (Sendinblue)
        "x-mailin-client",
        "x-sfmc-stack",  # Salesforce Marketing Cloud
        "x-job",
        "x-hs-cid",  # HubSpot
        "x-csa-complaints",  # Certified Senders Alliance
        "x-marketoid",
        "x-cmae-score",
        "x-emarsys-identify",
        "x-listmonk-campaign",
        "x-newsletter",
    }
)
_BULK_MAILER = re.compile(
    r"mailchimp|sendinblue|brevo|mailjet|phplist|listmonk|mailpoet|campaign ?monitor|sendy|"
    r"acumbamail|getresponse|constant ?contact|mautic|mailerlite|klaviyo|substack",
    re.IGNORECASE,
)
_UNSUBSCRIBE = ("unsubscribe", "abbestellen", "désinscri", "desinscri", "darse de baja", "配信停止")
_LAST_DOMAIN = re.compile(r"@([A-Za-z0-9.-]+)>?\s*$")
_DOMAIN = re.compile(r"@([A-Za-z0-9.-]+)")
_LIST_ID = re.compile(r"<([^<>]{1,200})>")


@dataclass(frozen=True, slots=True)
class Bulk:
    level: int  # the BCL, 0-9
    points: int  # the bulk evidence
    sender: str  # whose complaints count: the List-Id, else the From domain ("" when neither)
    tags: tuple[str, ...]  # what counted, e.g. ("LIST_UNSUBSCRIBE", "FEEDBACK_ID")


def bulk_sender(parsed: ParsedMessage) -> str:
    """Whose mailing this is, for complaints: `list:<List-Id>`, else `from:<From domain>`, else ""."""
    list_id = parsed.header("List-Id")
    if list_id:
        match = _LIST_ID.search(list_id)
        return "list:" + (match.group(1) if match else list_id.strip()[:200]).lower()
    domain = from_domain(parsed)
    return f"from:{domain}" if domain else ""


def from_domain(parsed: ParsedMessage) -> str:
    """The domain of the From header's address (lower case), "" when there is none."""
    value = parsed.header("From") or ""
    match = _LAST_DOMAIN.search(value) or _DOMAIN.search(value)
    return match.group(1).lower().rstrip(".") if match else ""


def bulk_level(
    parsed: ParsedMessage, facts: MessageFacts, *, spammy: bool = False, complaints: int = 0
) -> Bulk:
    """The BCL of a message (see the module docstring); `spammy`: the engine scored its content as
    suspicious; `complaints`: junk reports about its sender."""
    tags: list[str] = []
    points = 0
    names = {name.lower() for name, _ in parsed.headers}
    unsubscribe = "list-unsubscribe" in names
    if unsubscribe:
        points += 3
        tags.append("LIST_UNSUBSCRIBE")
    if "list-id" in names:
        points += 2
        tags.append("LIST_ID")
    if (parsed.header("Precedence") or "").strip().lower() in ("bulk", "list", "junk"):
        points += 2
        tags.append("PRECEDENCE_BULK")
    if "feedback-id" in names:
        points += 1
        tags.append("FEEDBACK_ID")
    if names & _ESP_HEADERS:
        points += 1
        tags.append("ESP_HEADER")
    if _BULK_MAILER.search(parsed.header("X-Mailer") or ""):
        points += 1
        tags.append("BULK_MAILER")
    text = parsed.text.lower()
    if any(word in text for word in _UNSUBSCRIBE):
        points += 1
        tags.append("UNSUBSCRIBE_TEXT")
    sender = bulk_sender(parsed)
    if points < BULK_POINTS:
        return Bulk(0, points, sender, tuple(tags))
    level = 4
    if unsubscribe and "one-click" in (parsed.header("List-Unsubscribe-Post") or "").lower():
        level -= 1
    if _authenticated(parsed, facts):
        level -= 1
    else:
        level += 1
    if not unsubscribe:
        level += 2
    if spammy:
        level += 1
    level += min(MAX_COMPLAINT_STEPS, max(0, complaints))
    return Bulk(max(1, min(9, level)), points, sender, tuple(tags))


def _authenticated(parsed: ParsedMessage, facts: MessageFacts) -> bool:
    auth = facts.auth
    if auth is None:
        return False
    if (
        auth.dmarc.result in (DmarcResult.PASS, DmarcResult.BESTGUESSPASS)
        or auth.spf.result is SpfResult.PASS
    ):
        return True
    domain = from_domain(parsed)
    return any(d.result is DkimResult.PASS and d.domain.lower() == domain for d in auth.dkim)
