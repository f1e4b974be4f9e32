"""CPU per message of inbound authentication (DKIM, DMARC, ARC, compauth, the header), by kind of message.

Runs `Authenticator.authenticate` N times on each of: an unsigned message, one RSA-2048 signature,
one Ed25519 signature, both, and a mailing-list forward (broken DKIM under an ARC seal), against a
loopback DNS server holding the keys and the DMARC record. The resolver's cache is on, as in a node:
what is measured is the CPU of one verification, not the DNS round trips (the first pass warms it).
Reports process CPU microseconds per message (`time.process_time`, so other load on the machine
does not count) and the wall time.

    .venv/bin/python bench/auth_verify.py [-n 2000] [--size 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import ed25519_key, rsa_key, seal_as_forwarder

from postroom.dns import DnsResolver
from postroom.model.verdicts import SpfResult, SpfVerdict
from postroom.protection.authentication import Authenticator


def message(size: int) -> bytes:
    head = (
        b"From: Ann <ann@contoso.com>\r\nTo: bob@tailspin.example\r\nSubject: Quarterly figures\r\n"
        b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <q1@contoso.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The quarterly figures are attached; the totals are on the last page.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=2000, help="verifications per kind")
    parser.add_argument("--size", type=int, default=4096, help="message size in octets")
    args = parser.parse_args()
    with DnsTestServer({"contoso.com": '_dmarc TXT "v=DMARC1; p=reject"', "lists.example": ""}) as dns:
        rsa, ed, lists = (
            rsa_key("contoso.com", "rsa"),
            ed25519_key("contoso.com", "ed"),
            rsa_key("lists.example"),
        )
        for key in (rsa, ed, lists):
            key.publish(dns)
        plain = message(args.size)
        forwarded = rsa.sign(plain).replace(b"Subject: ", b"Subject: [team] ")
        kinds = {
            "unsigned": plain,
            "rsa-2048": rsa.sign(plain),
            "ed25519": ed.sign(plain),
            "rsa+ed25519": ed.sign(rsa.sign(plain)),
            "arc forward": seal_as_forwarder(
                forwarded,
                lists,
                "mx.lists.example",
                "spf=pass smtp.mailfrom=contoso.com; dkim=pass header.d=contoso.com",
            ),
        }
        authenticator = Authenticator(DnsResolver(dns.settings()), "mx.postroom.test")
        spf = SpfVerdict(SpfResult.PASS, "contoso.com", "mailfrom", "192.0.2.1")
        print(f"{'message':<14}{'CPU µs/msg':>12}{'wall µs/msg':>13}  verdict")
        for kind, content in kinds.items():
            verdict = await authenticator.authenticate(content, spf)  # warms the resolver's cache
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.n):
                await authenticator.authenticate(content, spf)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            dkim = ",".join(v.result for v in verdict.dkim)
            summary = f"dkim={dkim} arc={verdict.arc.result} dmarc={verdict.dmarc.result}"
            print(f"{kind:<14}{cpu / args.n * 1e6:>12.0f}{wall / args.n * 1e6:>13.0f}  {summary}")


if __name__ == "__main__":
    asyncio.run(main())
