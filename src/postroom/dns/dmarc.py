"""DMARC records (RFC 7489 §6.3): parse a published `_dmarc` TXT record into typed tags, as receivers read it.

Receivers are strict about little and lenient about the rest, and so is this parser:

- the record is refused (`DmarcSyntaxError`, receivers ignore it) when it does not begin with
  `v=DMARC1`, repeats a tag (a tag-list with a duplicate is invalid, RFC 6376 §3.2, whose format DMARC
  uses), or has no valid `p=` (or an invalid `sp=`) and no usable `rua=` (§6.6.3: no DMARC processing);
- with no valid `p=` (or an invalid `sp=`) but a usable `rua=`, the record reads as `p=none` (§6.6.3),
  with a warning;
- any other tag with a value outside its grammar is discarded and its default applies (§6.3), with a
  warning naming it: `pct` (0-100, default 100), `adkim` and `aspf` (`r` or `s`, default `r`), `fo`
  (`0`, `1`, `d`, `s` joined by `:`, default `0`), `rf` (format names joined by `:`, of which `afrf` is
  the one defined, default `afrf`), `ri` (seconds, 1 to 32 digits, default 86400), a part without `=`;
  a `rua`/`ruf` URI that is not `mailto:` with an address, or whose size limit is not `!<digits>[kmgt]`,
  is dropped alone;
- unknown tags are ignored (§6.3), spaces around `;` and `=` are allowed, a trailing `;` is fine.

Written here rather than taken from checkdmarc because that library brings its own synchronous
resolver and a dozen dependencies for what is a tag-list parse.

*Security:* the text comes from DNS and is untrusted; it is only split and compared, never evaluated.
Warnings quote what was found shortened to `MAX_QUOTED` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

POLICIES = ("none", "quarantine", "reject")
ALIGNMENTS = ("r", "s")
DEFAULT_REPORT_INTERVAL = 86_400  # seconds (RFC 7489 §6.3 ri=)
MAX_QUOTED = 80  # characters of a bad value quoted in a warning
_FAILURE_OPTIONS = re.compile(r"[01ds](?::[01ds])*", re.ASCII | re.IGNORECASE)
_REPORT_FORMATS = re.compile(r"[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][A-Za-z0-9]*)*", re.ASCII)
_REPORT_INTERVAL = re.compile(r"[0-9]{1,32}", re.ASCII)
_PERCENT = re.compile(r"[0-9]{1,3}", re.ASCII)
_SIZE_LIMIT = re.compile(r"[0-9]+[kmgt]?", re.ASCII | re.IGNORECASE)


class DmarcSyntaxError(ValueError):
    """The record is not a usable DMARC record; the message names the tag and the problem."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # p=, or "none" when §6.6.3 applies
    subdomain_policy: str | None  # sp=, None: the same as p=
    dkim_alignment: str  # adkim= r (relaxed, default) or s (strict)
    spf_alignment: str  # aspf=
    percent: int  # pct=, default 100
    aggregate_reports: tuple[str, ...]  # rua= mailto: URIs that receivers can use
    failure_reports: tuple[str, ...]  # ruf=
    failure_options: str = "0"  # fo=
    report_format: str = "afrf"  # rf=
    report_interval: int = DEFAULT_REPORT_INTERVAL  # ri=, seconds
    warnings: tuple[str, ...] = ()  # what receivers discard, each with the default that applies instead


def is_dmarc_record(text: str) -> bool:
    head = text.lstrip().split(";", 1)[0].replace(" ", "")
    return head.lower() == "v=dmarc1"


def _shown(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def parse_dmarc(text: str) -> DmarcRecord:
    """The record as receivers read it; `DmarcSyntaxError` when they would ignore it altogether."""
    tags: dict[str, str] = {}
    warnings: list[str] = []
    for index, part in enumerate(text.split(";")):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if index == 0 and (name != "v" or value != "DMARC1" or not equals):
            raise DmarcSyntaxError(f"the record must begin with v=DMARC1, not {_shown(part)!r}")
        if not equals or not name:
            warnings.append(f"{_shown(part)!r} is not a tag=value pair: receivers ignore it")
            continue
        if name in tags:
            raise DmarcSyntaxError(f"the tag {name}= appears twice: receivers ignore the record")
        tags[name] = value
    if "v" not in tags:
        raise DmarcSyntaxError("the record must begin with v=DMARC1")

    reports = {tag: _uris(tag, tags[tag], warnings) if tag in tags else () for tag in ("rua", "ruf")}
    policy = tags.get("p", "").lower()
    subdomain = tags.get("sp")
    bad_policy = (
        f"p={_shown(tags['p'])} is not none, quarantine or reject"
        if "p" in tags and policy not in POLICIES
        else "there is no p= tag"
        if "p" not in tags
        else f"sp={_shown(subdomain)} is not none, quarantine or reject"
        if subdomain is not None and subdomain.lower() not in POLICIES
        else None
    )
    if bad_policy is not None:
        if not reports["rua"]:
            raise DmarcSyntaxError(
                f"{bad_policy}, and without a usable rua= receivers apply no DMARC (RFC 7489 §6.6.3)"
            )
        warnings.append(f"{bad_policy}: with rua= given, receivers act as if p=none (RFC 7489 §6.6.3)")
        policy, subdomain = "none", None

    def checked(tag: str, valid: bool, default: str, allowed: str) -> str | None:
        if tag not in tags or valid:
            return tags.get(tag)
        warnings.append(f"{tag}={_shown(tags[tag])} is not {allowed}: receivers discard it and use {default}")
        return None

    alignments = {
        tag: (checked(tag, tags.get(tag, "").lower() in ALIGNMENTS, "r", "r or s") or "r").lower()
        for tag in ("adkim", "aspf")
    }
    percent = checked(
        "pct",
        bool(_PERCENT.fullmatch(tags.get("pct", ""))) and int(tags.get("pct", "0")) <= 100,
        "100",
        "a whole number from 0 to 100",
    )
    options = checked(
        "fo", bool(_FAILURE_OPTIONS.fullmatch(tags.get("fo", ""))), "0", "0, 1, d or s (joined by ':')"
    )
    formats = checked(
        "rf",
        bool(_REPORT_FORMATS.fullmatch(tags.get("rf", "")))
        and "afrf" in tags.get("rf", "").lower().split(":"),
        "afrf",
        "a list of report formats holding afrf",
    )
    interval = checked(
        "ri", bool(_REPORT_INTERVAL.fullmatch(tags.get("ri", ""))), "86400", "a number of seconds"
    )
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain.lower() if subdomain else None,
        dkim_alignment=alignments["adkim"],
        spf_alignment=alignments["aspf"],
        percent=int(percent) if percent is not None else 100,
        aggregate_reports=reports["rua"],
        failure_reports=reports["ruf"],
        failure_options=(options or "0").lower(),
        report_format=(formats or "afrf").lower(),
        report_interval=int(interval) if interval is not None else DEFAULT_REPORT_INTERVAL,
        warnings=tuple(warnings),
    )


def _uris(tag: str, value: str, warnings: list[str]) -> tuple[str, ...]:
    """The usable URIs of rua= or ruf=; each one receivers cannot use is dropped with a warning."""
    usable: list[str] = []
    for uri in (uri.strip() for uri in value.split(",")):
        if not uri:
            continue
        scheme, colon, rest = uri.partition(":")
        address, bang, size = rest.partition("!")
        if not colon or scheme.lower() != "mailto":
            problem = "is not a mailto: URI (RFC 7489 §7.1 defines no other)"
        elif "@" not in address.strip("@") or address.count("@") != 1:
            problem = "has no address after mailto:"
        elif bang and not _SIZE_LIMIT.fullmatch(size):
            problem = "has a size limit that is not !<digits> with k, m, g or t"
        else:
            usable.append(uri)
            continue
        warnings.append(f"{tag}: {_shown(uri)!r} {problem}: receivers send no report there")
    return tuple(usable)
