"""TLS reporting (RFC 8460): the `_smtp._tls` record."""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint, quote


async def check_tls_rpt(check: Check) -> None:
    name = f"_smtp._tls.{check.facts.name}"
    expected = check.expect("TXT", name)
    records = await check.txt(name)
    if records is None:
        return
    reports = [r.text for r in records if r.text.replace(" ", "").lower().startswith("v=tlsrptv1")]
    found = tuple(quote(t) for t in reports)
    if not reports:
        check.add(
            FindingCode.TLS_RPT_MISSING,
            Severity.WARNING,
            name,
            "no TLS reporting record: you are not told when senders fail to reach the domain over TLS",
            fix=publish_hint(expected),
            publish=expected,
        )
        return
    tags = dict(
        (part.split("=", 1)[0].strip().lower(), part.split("=", 1)[1].strip())
        for part in reports[0].split(";")
        if "=" in part
    )
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if len(reports) > 1 or not uris or not all(u.lower().startswith(("mailto:", "https:")) for u in uris):
        check.add(
            FindingCode.TLS_RPT_SYNTAX,
            Severity.ERROR,
            name,
            "the TLS reporting record is not usable: it needs exactly one v=TLSRPTv1 record with "
            "rua=mailto: or rua=https: (RFC 8460 §3)",
            found=found,
            fix=f"replace it: {publish_hint(expected)}",
            publish=expected,
        )
        return
    check.add(FindingCode.TLS_RPT_OK, Severity.OK, name, f"TLS reports go to {', '.join(uris)}", found=found)
