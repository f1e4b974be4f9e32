"""Protection end to end: real messages over SMTP from loopback clients to a node with the filtering
stack on (the built-in engines), a loopback DNS server holding the senders' SPF, DKIM and DMARC.

Asserts what a user sees: where each message landed (Inbox, Junk, quarantine, refused), the headers
on the delivered copy, the replies, and the trace.
"""

from __future__ import annotations

import base64
import datetime
import io
import smtplib
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom.app import App
from postroom.config import Settings
from postroom.directory import REFRESH_SECONDS, AntiSpamChange, PolicyChange, PolicyKind
from postroom.model.flow import TraceStatus
from postroom.model.scope import OPERATOR
from postroom.trace import TraceQuery
from tests.conftest import populate, wait_for
from tests.support.dns_server import DnsTestServer
from tests.support.mail_auth import rsa_key, seal_as_forwarder
from tests.support.node import RunningNode, make_node, running
from tests.support.records import exported, stored_messages

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
BODY = "Hello Alice,\n\nThe minutes of Tuesday's meeting are below. Talk soon.\n\nNews team\n"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


SENDER_ZONE = """
@ TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc TXT "v=DMARC1; p=reject"
"""


@dataclass
class World:
    dns: DnsTestServer
    app: App
    node: RunningNode
    settings: Settings
    key: bytes  # the PEM private key of s1._domainkey.sender.test


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with DnsTestServer() as server:
        server.set_zone("sender.test", SENDER_ZONE)
        server.add_txt("s1._domainkey.sender.test", "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())
        server.set_zone("forger.test", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"')
        settings = make_node(
            tmp_path_factory.mktemp("node"), nameservers=(f"127.0.0.1:{server.port}",), protection=True
        )
        app = App.open(settings)
        populate(app)
        with running(settings) as node:
            yield World(server, app, node, settings, pem)
        app.close()


def message(
    *,
    sender: str = "news@sender.test",
    to: str = "alice@contoso.com",
    subject: str = "Hello",
    body: str = BODY,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    mail.set_content(body)
    return mail


def wire(mail: EmailMessage) -> bytes:
    """The message as SMTP carries it (CRLF line ends)."""
    return mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))


def signed(mail: EmailMessage, key: bytes) -> bytes:
    raw = wire(mail)
    signature = dkim.sign(
        raw, b"s1", b"sender.test", key, include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]
    )
    return bytes(signature) + raw


def send(
    world: World, raw: bytes, *, mail_from: str = "news@sender.test", to: str = "alice@contoso.com"
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(*world.node.mx) as client:
        client.ehlo("mail.sender.test")
        return client.sendmail(mail_from, [to], raw)


def landed(world: World, address: str, subject: str, folder: str = "Inbox") -> bytes | None:
    for stored in stored_messages(world.app.directory, world.app.mailstore, address, folder):
        if stored.subject == subject:
            return exported(world.app.directory, world.app.mailstore, address, stored.uid, folder)
    return None


def headers_of(raw: bytes) -> str:
    """The header block, unfolded."""
    head = raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    return head.replace("\r\n\t", " ").replace("\r\n ", " ")


def test_signed_mail_passes_every_check_and_lands_in_the_inbox(world: World) -> None:
    send(world, signed(message(subject="signed and aligned"), world.key))
    wait_for(lambda: landed(world, "alice@contoso.com", "signed and aligned") is not None)
    head = headers_of(landed(world, "alice@contoso.com", "signed and aligned") or b"")
    assert "Authentication-Results: mx.postroom.test;" in head
    for verdict in ("spf=pass", "dkim=pass", "dmarc=pass", "compauth=pass"):
        assert verdict in head
    assert "header.from=sender.test" in head
    assert "X-Postroom-Antispam-Report: CIP:127.0.0.1;" in head and "SFV:NSPM;" in head and "DIR:INB;" in head
    assert "X-Postroom-Antispam: BCL:0;" in head


def test_forged_from_fails_dmarc_and_is_marked_spoof_into_junk(world: World) -> None:
    raw = wire(message(sender="ceo@sender.test", subject="wire the money now"))
    send(world, raw, mail_from="billing@forger.test")
    wait_for(lambda: landed(world, "alice@contoso.com", "wire the money now", "Junk") is not None)
    head = headers_of(landed(world, "alice@contoso.com", "wire the money now", "Junk") or b"")
    assert "dmarc=fail action=oreject header.from=sender.test" in head
    assert "compauth=fail" in head and "CAT:SPOOF;" in head
    assert landed(world, "alice@contoso.com", "wire the money now") is None


def test_gtube_is_high_confidence_spam_in_junk(world: World) -> None:
    send(world, signed(message(subject="gtube test", body=f"{GTUBE}\n"), world.key))
    wait_for(lambda: landed(world, "alice@contoso.com", "gtube test", "Junk") is not None)
    head = headers_of(landed(world, "alice@contoso.com", "gtube test", "Junk") or b"")
    assert "SCL:9;" in head and "CAT:HSPM;" in head


def test_eicar_is_quarantined_and_traced(world: World) -> None:
    mail = message(subject="invoice attached")
    mail.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="invoice.pdf")
    send(world, signed(mail, world.key))
    wait_for(lambda: _held(world, "invoice attached"))
    assert landed(world, "alice@contoso.com", "invoice attached") is None
    assert landed(world, "alice@contoso.com", "invoice attached", "Junk") is None


def test_an_exe_inside_a_zip_is_quarantined_as_a_blocked_file_type(world: World) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("setup.exe", b"MZ\x90\x00" + b"\x00" * 200)
    mail = message(subject="your setup")
    mail.add_attachment(archive.getvalue(), maintype="application", subtype="zip", filename="setup.zip")
    send(world, signed(mail, world.key))
    wait_for(lambda: _held(world, "your setup"))


def test_a_foreign_authentication_results_claiming_our_id_is_removed(world: World) -> None:
    mail = message(sender="billing@forger.test", subject="pre-stamped")
    raw = (
        b"Authentication-Results: mx.postroom.test; spf=pass smtp.mailfrom=paypal.com; dmarc=pass\r\n"
        b"X-Postroom-Organization-SCL: -1\r\n" + wire(mail)
    )
    send(world, raw, mail_from="billing@forger.test")
    wait_for(lambda: landed(world, "alice@contoso.com", "pre-stamped") is not None)
    head = headers_of(landed(world, "alice@contoso.com", "pre-stamped") or b"")
    assert "smtp.mailfrom=paypal.com" not in head
    assert "X-Postroom-Organization-SCL" not in head
    assert head.count("Authentication-Results: mx.postroom.test;") == 1


def _held(world: World, subject: str) -> bool:
    result = world.app.trace.search(TraceQuery(status=TraceStatus.QUARANTINED), OPERATOR)
    return any(row.subject == subject for row in result)


def test_a_list_forward_with_a_broken_signature_passes_when_the_tenant_trusts_the_sealer(
    world: World,
) -> None:
    """sender.test's signed message through a mailing list (subject tag and footer break the DKIM
    signature; the list's IP is not in sender.test's SPF): DMARC fails on our own checks, and the
    list's ARC seal (a valid chain) carries what the list saw. fabrikam trusts the list's sealer:
    the message passes for carol; contoso does not: alice's copy is spoof, in Junk."""
    lists = rsa_key("lists.test", "arc", bits=1024)
    world.dns.set_zone("lists.test", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"')
    lists.publish(world.dns)
    world.app.directory.set_protection_policy(
        OPERATOR,
        "fabrikam",
        PolicyKind.ANTISPAM,
        "Default",
        PolicyChange(settings=AntiSpamChange(trusted_arc_sealers=["lists.test"])),
    )
    time.sleep(2 * REFRESH_SECONDS)  # a directory change is in force on the node within a refresh
    original = signed(message(to="team@lists.test", subject="Quarterly figures"), world.key)
    changed = original.replace(b"Subject: Quarterly figures", b"Subject: [team] Quarterly figures")
    changed += b"--\r\nteam mailing list\r\n"
    forwarded = seal_as_forwarder(
        changed, lists, "mx.lists.test", "spf=pass smtp.mailfrom=sender.test; dkim=pass header.d=sender.test"
    )
    with smtplib.SMTP(*world.node.mx) as client:
        client.ehlo("mx.lists.test")
        assert (
            client.sendmail("team-bounces@lists.test", ["alice@contoso.com", "carol@fabrikam.com"], forwarded)
            == {}
        )
    subject = "[team] Quarterly figures"
    wait_for(lambda: landed(world, "carol@fabrikam.com", subject) is not None)
    trusted = headers_of(landed(world, "carol@fabrikam.com", subject) or b"")
    assert "dkim=fail" in trusted and "arc=pass" in trusted
    assert "compauth=pass reason=130" in trusted and "SFV:NSPM;" in trusted
    # contoso trusts no sealer: on our own checks the message fails DMARC with a broken signature,
    # which the spam engine calls phishing: alice's copy is held.
    wait_for(lambda: _held(world, subject))
    assert landed(world, "alice@contoso.com", subject) is None
