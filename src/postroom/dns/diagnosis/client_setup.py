"""The client set-up CNAMEs: autodiscover and autoconfig point at the service host."""

from __future__ import annotations

from postroom.dns.diagnosis.common import Check, FindingCode, Severity, publish_hint
from postroom.dns.resolver import DnsTemporaryError, NxDomain


async def check_client_setup(check: Check) -> None:
    host = check.service.hostname
    for label in ("autodiscover", "autoconfig"):
        name = f"{label}.{check.facts.name}"
        expected = check.expect("CNAME", name)
        try:
            target = await check.resolver.cname(name, fresh=True)
        except NxDomain:
            target = None
        except DnsTemporaryError as error:
            check.unavailable(name, error)
            continue
        if target is None:
            check.add(
                FindingCode.CLIENT_SETUP_MISSING,
                Severity.WARNING,
                name,
                f"no {label} CNAME: mail clients cannot find their settings by themselves",
                fix=publish_hint(expected),
                publish=expected,
            )
        elif target != host:
            check.add(
                FindingCode.CLIENT_SETUP_WRONG,
                Severity.WARNING,
                name,
                f"{name} points at {target}, not at {host}",
                found=(f"CNAME {target}",),
                fix=f"replace it: {publish_hint(expected)}",
                publish=expected,
            )
        else:
            check.add(FindingCode.CLIENT_SETUP_OK, Severity.OK, name, f"{label} points at {host}")
