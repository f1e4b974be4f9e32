"""The spam engines' corpus: realistic ham and spam messages and where each came from.

`ham/*.eml` (personal mail, business mail with attachments, replies with quoted text, newsletters
with List-Unsubscribe, receipts, a calendar invitation, notifications, a mailing list, an automatic
reply, text in German, French, Japanese, Russian and Spanish) must never be spam; `spam/*.eml`
(pharmacy, advance-fee fraud, lottery, crypto, phishing, fake invoice, SEO, casino, dating, image
spam, extortion) must be caught.

A message alone is not what an engine sees: the node also knows the connection (IP, HELO, verified
reverse name), the authentication results and the connection filter's listing. `ORIGINS` says that for
every message, as a receiving MX would have found it: legitimate mail from well-configured servers
(SPF pass, DMARC pass where the domain publishes a record); spam from a mix of botnets (bare-IP HELO,
no reverse name), spoofed domains (SPF fail, DMARC fail), spammers' own fully authenticated domains,
hijacked web servers, and one IP on a DNS blocklist. `facts(name)` gives the `MessageFacts` the
built-in engine reads; `zones()` the DNS zones that make Rspamd find the same on the loopback DNS
server (SPF, DMARC, HELO and MX records, and a root zone that answers NXDOMAIN for every other name,
so Rspamd never waits on the internet).
"""

from __future__ import annotations

import email.utils
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from postroom.model.verdicts import (
    ArcResult,
    ArcVerdict,
    AuthVerdict,
    CompAuthResult,
    ConnectionVerdict,
    DkimResult,
    DkimVerdict,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    IpListing,
    MessageFacts,
    SpfResult,
    SpfVerdict,
)

HERE = Path(__file__).parent
HAM = sorted(p.name for p in (HERE / "ham").glob("*.eml"))
SPAM = sorted(p.name for p in (HERE / "spam").glob("*.eml"))
RECIPIENT = "user@postroom-test.example"
OUR_HOSTNAME = "mx.postroom-test.example"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from, and what SPF and DMARC said about it."""

    ip: str
    helo: str
    ptr: str = ""  # the verified reverse name, "" for none
    spf: str = "pass"  # pass, fail, softfail, none
    dmarc: str = "pass"  # pass, fail, none (no record)
    policy: str = "none"  # the From domain's DMARC p=
    listed: bool = False  # on a DNS blocklist (the connection filter scores instead of refusing)


def _legit(ip: str, host: str, dmarc: str = "pass") -> Origin:
    return Origin(ip, host, host, "pass", dmarc)


ORIGINS: dict[str, Origin] = {
    "h01_personal_weekend.eml": _legit("198.51.100.11", "mail.lindqvist.example", dmarc="none"),
    "h02_family_photos.eml": _legit("198.51.100.12", "mail.ostrowski.example", dmarc="none"),
    "h03_contract_pdf.eml": _legit("198.51.100.13", "mail.harborlegal.example"),
    "h04_reply_quoted.eml": _legit("198.51.100.14", "mail.brightline-studio.example"),
    "h05_outlook_budget.eml": _legit("198.51.100.15", "mail.contoso-engineering.example"),
    "h06_newsletter_weekly.eml": _legit("198.51.100.16", "mail.thegardenletter.example"),
    "h07_newsletter_retail.eml": _legit("198.51.100.17", "mail123.atl11.mcsv.example"),
    "h08_receipt_shop.eml": _legit("198.51.100.18", "mail.papercraft-supplies.example"),
    "h09_receipt_ride.eml": _legit("198.51.100.19", "mail.citycab-app.example"),
    "h10_calendar_invite.eml": _legit("198.51.100.15", "mail.contoso-engineering.example"),
    "h11_german_personal.eml": _legit("198.51.100.21", "mail.hansen-kiel.example", dmarc="none"),
    "h12_french_business.eml": _legit("198.51.100.22", "mail.mercier-instruments.example"),
    "h13_japanese.eml": _legit("198.51.100.23", "mail.sakura-design.example"),
    "h14_russian_personal.eml": _legit("198.51.100.24", "mail.orlova-home.example", dmarc="none"),
    "h15_code_review_notification.eml": _legit("198.51.100.25", "mail.codehost.example"),
    "h16_password_reset.eml": _legit("198.51.100.26", "mail.accounts.lumen-notes.example"),
    "h17_mailing_list.eml": _legit("198.51.100.27", "mail.lists.stargazers.example", dmarc="none"),
    "h18_shipping_notice.eml": _legit("198.51.100.18", "mail.papercraft-supplies.example"),
    "h19_out_of_office.eml": _legit("198.51.100.29", "mail.fabrikam-partners.example"),
    "h20_spanish_newsletter.eml": _legit("198.51.100.30", "mail.biblioteca.valverde.example"),
    # a botnet: a bare IP for HELO, no reverse name, a domain without SPF
    "s01_pharma.eml": Origin("203.0.113.11", "[203.0.113.11]", spf="none", dmarc="none"),
    # Gmail's own servers: everything authenticates (the content must tell)
    "s02_advance_fee.eml": _legit("203.0.113.12", "mail-ej1-f12.google.example"),
    # a hijacked home PC: not a FQDN, no reverse name, softfail
    "s03_lottery.eml": Origin("203.0.113.13", "WIN-7K2P0QH", spf="softfail", dmarc="none"),
    # the spammer's own, fully authenticated domain
    "s04_crypto_shortener.eml": _legit("203.0.113.14", "mta1.cryptowealth-club.io"),
    # a spoof of a bank whose domain asks DMARC reject
    "s05_bank_phish.eml": Origin(
        "203.0.113.15", "host-15.dyn.example", spf="fail", dmarc="fail", policy="reject"
    ),
    # a rented server without reverse name
    "s06_invoice_bare_ip.eml": Origin("203.0.113.16", "invoice-center.biz", spf="none", dmarc="none"),
    # a cold-mailing VPS sending as a Gmail address (Gmail: ~all, p=none)
    "s07_seo.eml": Origin(
        "203.0.113.17", "vps-2231.hosting.example", "vps-2231.hosting.example", "softfail", "fail"
    ),
    # an IP on the DNS blocklist
    "s08_casino.eml": Origin(
        "203.0.113.18", "mail.royalvegas-bonus.win", "mail.royalvegas-bonus.win", "pass", "none", listed=True
    ),
    "s09_dating.eml": Origin("203.0.113.19", "localhost", spf="none", dmarc="none"),
    "s10_caps_proposal.eml": Origin("203.0.113.20", "ngcorp-finance.com", spf="none", dmarc="none"),
    "s11_image_spam.eml": Origin(
        "203.0.113.21", "smtp.mega-deals-outlet.top", "smtp.mega-deals-outlet.top", "softfail", "none"
    ),
    "s12_delivery_phish.eml": Origin(
        "203.0.113.22", "mx.parcel-track-notice.xyz", "mx.parcel-track-notice.xyz", "none", "none"
    ),
    # the recipient's own address, forged (SPF -all, no DMARC record)
    "s13_sextortion.eml": Origin("203.0.113.23", "[203.0.113.23]", spf="fail", dmarc="none"),
    "s14_mailbox_full_phish.eml": _legit("203.0.113.24", "mail.it-support-mailadmin.top", dmarc="none"),
}

PHISH_SAMPLE = "s05_bank_phish.eml"
NEWSLETTERS = ("h06_newsletter_weekly.eml", "h07_newsletter_retail.eml", "h20_spanish_newsletter.eml")


def load(name: str) -> bytes:
    """The message as it arrives now: its Date a few minutes ago (both engines score a Date far from
    the clock, and the corpus must not age)."""
    message = (HERE / ("ham" if name.startswith("h") else "spam") / name).read_bytes()
    sent = email.utils.format_datetime(datetime.now(UTC) - timedelta(minutes=4)).encode()
    return re.sub(rb"(?im)^Date:[^\r\n]*", b"Date: " + sent, message, count=1)


def recipients(name: str) -> tuple[str, ...]:
    """The envelope recipients: the message's To and Cc addresses (RECIPIENT when none is usable)."""
    message = load(name)
    found = [
        address
        for _, address in email.utils.getaddresses([_header(message, "To"), _header(message, "Cc")])
        if "@" in address
    ]
    return tuple(found) or (RECIPIENT,)


def _header(message: bytes, name: str) -> str:
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    match = re.search(rf"^{name}:[ \t]*(.*)$", head, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else ""


def _address(value: str) -> str:
    match = re.search(r"<([^<>]*)>\s*$", value)
    return (match.group(1) if match else value).strip()


def mail_from(name: str) -> str:
    """The envelope sender: the Return-Path the message kept, else its From address."""
    message = load(name)
    return _address(_header(message, "Return-Path") or _header(message, "From"))


def from_domain(name: str) -> str:
    return _address(_header(load(name), "From")).rpartition("@")[2].lower()


def facts(name: str) -> MessageFacts:
    origin = ORIGINS[name]
    sender = mail_from(name)
    domain = (sender.rpartition("@")[2] or origin.helo).lower()
    spf = SpfResult(origin.spf)
    dmarc = DmarcResult(origin.dmarc)
    compauth = {DmarcResult.PASS: CompAuthResult.PASS, DmarcResult.FAIL: CompAuthResult.FAIL}.get(
        dmarc, CompAuthResult.NONE
    )
    auth = AuthVerdict(
        spf=SpfVerdict(spf, domain, "mailfrom" if sender else "helo", origin.ip),
        dkim=(DkimVerdict(DkimResult.NONE),),
        dmarc=DmarcVerdict(
            dmarc, from_domain(name), DmarcPolicy(origin.policy), spf_aligned=dmarc is DmarcResult.PASS
        ),
        arc=ArcVerdict(ArcResult.NONE),
        compauth=compauth,
        compauth_reason=0 if compauth is CompAuthResult.FAIL else 100,
        header="",
    )
    listing = (
        ConnectionVerdict(IpListing.BLOCKED, "dnsbl:zen.blocklist.example", "127.0.0.2")
        if origin.listed
        else ConnectionVerdict()
    )
    return MessageFacts(
        client_ip=origin.ip,
        helo=origin.helo,
        mail_from=sender,
        recipients=recipients(name),
        ptr=origin.ptr,
        auth=auth,
        connection=listing,
    )


ROOT_ZONE = """\
@ 3600 IN SOA ns.root.test. hostmaster.root.test. 1 3600 600 86400 60
@ 3600 IN NS ns.root.test.
"""


def zones() -> dict[str, str]:
    """Zone text by origin: what makes Rspamd's own SPF, DMARC, HELO and MX lookups find `ORIGINS`."""
    records: dict[str, list[str]] = defaultdict(list)
    spf_ips: dict[str, set[str]] = defaultdict(set)
    spf_all: dict[str, str] = {}
    dmarc: dict[str, str] = {}
    for name, origin in ORIGINS.items():
        envelope = mail_from(name).rpartition("@")[2].lower()
        helo = origin.helo.lower()
        if "." in helo and not helo.startswith("["):  # a host name, not an address literal
            records[helo].append(f"{helo}. 300 IN A {origin.ip}")
        if origin.ptr:
            reverse = ".".join(reversed(origin.ip.split("."))) + ".in-addr.arpa"
            records[reverse].append(f"{reverse}. 300 IN PTR {origin.ptr}.")
        if envelope and origin.spf != "none":
            spf_all[envelope] = {"pass": "-all", "fail": "-all", "softfail": "~all"}[origin.spf]
            if origin.spf == "pass":
                spf_ips[envelope].add(origin.ip)
        hostname = "." in helo and not helo.startswith("[")
        for domain in {envelope, from_domain(name)} - {""}:
            if hostname and (origin.spf != "none" or origin.ptr):
                records[domain].append(f"{domain}. 300 IN MX 10 {helo}.")
        if origin.dmarc != "none":
            dmarc[from_domain(name)] = origin.policy
    for domain, qualifier in spf_all.items():
        ips = " ".join(f"ip4:{ip}" for ip in sorted(spf_ips[domain]))
        records[domain].append(f'{domain}. 300 IN TXT "v=spf1 {ips} {qualifier}"'.replace("  ", " "))
    for domain, policy in dmarc.items():
        records[domain].append(f'_dmarc.{domain}. 300 IN TXT "v=DMARC1; p={policy}"')
    # One zone per name; the root zone answers NXDOMAIN for everything else (blocklists, map URLs).
    zone_text = {origin: "\n".join(dict.fromkeys(lines)) + "\n" for origin, lines in records.items()}
    return {".": ROOT_ZONE, **_merge(zone_text)}


def _merge(zone_text: dict[str, str]) -> dict[str, str]:
    """Records of names below another served name go into that name's zone (DnsTestServer serves
    no delegations): one zone per top-most name."""
    tops = [n for n in zone_text if not any(n != o and n.endswith("." + o) for o in zone_text)]
    merged: dict[str, str] = {top: "" for top in tops}
    for name, text in zone_text.items():
        top = next(t for t in tops if name == t or name.endswith("." + t))
        merged[top] += text
    return merged
