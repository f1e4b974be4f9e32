"""DMARC records (RFC 7489 §6.3): parse a published `_dmarc` TXT record into typed tags.

Strict where a receiver would discard the record (no `v=DMARC1` first, no valid `p=`, a tag with a
value outside its grammar), lenient where RFC 7489 says to be (unknown tags are ignored, spaces
around `;` and `=` are allowed, a trailing `;` is fine). `DmarcSyntaxError` says which tag is wrong
and why. Written here rather than taken from checkdmarc because that library brings its own
synchronous resolver and a dozen dependencies for what is a tag-list parse.

*Security:* the text comes from DNS and is untrusted; it is only split and compared, never evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("none", "quarantine", "reject")
ALIGNMENTS = ("r", "s")


class DmarcSyntaxError(ValueError):
    """The record is not a usable DMARC record; the message names the tag and the problem."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str | None  # sp=, None: the same as p=
    dkim_alignment: str  # adkim= r (relaxed, default) or s (strict)
    spf_alignment: str  # aspf=
    percent: int  # pct=, default 100
    aggregate_reports: tuple[str, ...]  # rua= URIs
    failure_reports: tuple[str, ...]  # ruf= URIs


def is_dmarc_record(text: str) -> bool:
    head = text.lstrip().split(";", 1)[0].replace(" ", "")
    return head.lower() == "v=dmarc1"


def parse_dmarc(text: str) -> DmarcRecord:
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals or not name:
            raise DmarcSyntaxError(f"{part!r} is not a tag=value pair")
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise DmarcSyntaxError(f"the record must begin with v=DMARC1, not {part!r}")
        if name in tags:
            raise DmarcSyntaxError(f"the tag {name}= appears twice")
        tags[name] = value
    if "v" not in tags:
        raise DmarcSyntaxError("the record must begin with v=DMARC1")
    if tags.get("p", "").lower() not in POLICIES:
        found = f"p={tags['p']}" if "p" in tags else "no p= tag"
        raise DmarcSyntaxError(f"{found}: the policy must be p=none, p=quarantine or p=reject")
    subdomain = tags.get("sp")
    if subdomain is not None and subdomain.lower() not in POLICIES:
        raise DmarcSyntaxError(f"sp={subdomain}: must be none, quarantine or reject")
    for tag in ("adkim", "aspf"):
        if tags.get(tag, "r").lower() not in ALIGNMENTS:
            raise DmarcSyntaxError(f"{tag}={tags[tag]}: must be r (relaxed) or s (strict)")
    percent_text = tags.get("pct", "100")
    if not percent_text.isdigit() or not 0 <= int(percent_text) <= 100:
        raise DmarcSyntaxError(f"pct={percent_text}: must be a whole number from 0 to 100")
    reports = {tag: _uris(tag, tags.get(tag, "")) for tag in ("rua", "ruf")}
    return DmarcRecord(
        policy=tags["p"].lower(),
        subdomain_policy=subdomain.lower() if subdomain else None,
        dkim_alignment=tags.get("adkim", "r").lower(),
        spf_alignment=tags.get("aspf", "r").lower(),
        percent=int(percent_text),
        aggregate_reports=reports["rua"],
        failure_reports=reports["ruf"],
    )


def _uris(tag: str, value: str) -> tuple[str, ...]:
    uris = tuple(uri.strip() for uri in value.split(",") if uri.strip())
    for uri in uris:
        scheme, colon, rest = uri.partition(":")
        if not colon or not rest or scheme.lower() not in ("mailto", "https", "http"):
            raise DmarcSyntaxError(f"{tag}={value}: {uri!r} is not a mailto: URI")
        if scheme.lower() == "mailto" and "@" not in rest:
            raise DmarcSyntaxError(f"{tag}={value}: {uri!r} has no address after mailto:")
    return uris
