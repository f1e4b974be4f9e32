"""A message as IMAP shows it: ENVELOPE, BODYSTRUCTURE and BODY[section] as Dovecot answers for the same
bytes (golden answers in messages/dovecot.json, taken from Dovecot 2.3.19 once), decoded header values
for SEARCH, and no input that makes the view raise or run away."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from postroom.imap.message import (
    MAX_DEPTH,
    MAX_FIELDS,
    MAX_PARTS,
    MessageView,
    _addresses_by_tokens,
    _simple_addresses,
    decode_words,
    parse_addresses,
)
from tests.imap.imap_values import read_value

MESSAGES = Path(__file__).parent / "messages"
DOVECOT = json.loads((MESSAGES / "dovecot.json").read_text())


def view_of(name: str) -> MessageView:
    return MessageView((MESSAGES / name).read_bytes())


@pytest.mark.parametrize("name", sorted(DOVECOT))
def test_envelope_and_structure_are_dovecots(name: str) -> None:
    view, golden = view_of(name), DOVECOT[name]
    assert read_value(view.envelope()) == read_value(golden["envelope"].encode("latin-1"))
    assert read_value(view.bodystructure(True)) == read_value(golden["bodystructure"].encode("latin-1"))
    assert read_value(view.bodystructure(False)) == read_value(golden["body"].encode("latin-1"))


@pytest.mark.parametrize(
    ("name", "spec"),
    [(name, spec) for name in sorted(DOVECOT) for spec in sorted(DOVECOT[name]["sections"])],
)
def test_sections_are_dovecots(name: str, spec: str) -> None:
    assert view_of(name).section(spec) == DOVECOT[name]["sections"][spec].encode("latin-1")


def test_sections_read_any_case_and_unknown_ones_are_empty() -> None:
    view = view_of("forwarded.eml")
    assert view.section("2.1.1") == b"See attached."
    assert view.section("header.fields (subject)") == b"Subject: Fwd: Invoice\r\n\r\n"
    assert view.section("2.HEADER.FIELDS (FROM)") == b"From: Ann <ann@fabrikam.test>\r\n\r\n"
    assert view.section("HEADER.FIELDS (X-NONE)") == b"\r\n"
    for spec in ("9", "2.9.1", "1.1.1", "2.1.1.1", "1.0", "99999999999", "WHATEVER", "1.WHATEVER"):
        assert view.section(spec) == b"", spec


def test_text_search_values_are_decoded() -> None:
    view = view_of("plain.eml")
    assert view.header_value("Subject") == ["Café menu for the week"]
    assert view.header_value("received")[0].startswith("from mx.fabrikam.test")
    assert view.header_value("X-Absent") == []
    assert "café is open" in view.body_text()
    assert "Café news" in view_of("alternative.eml").body_text()  # quoted-printable, ISO-8859-1
    assert view_of("eightbit.eml").header_value("subject") == ["Grüße"]  # raw UTF-8 (RFC 6532)
    assert "Subject: Invoice" in view_of("forwarded.eml").body_text()  # the forwarded message's header


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"=?utf-8?b?Q2Fmw6k=?=", "Café"),
        (b"=?ISO-8859-1?Q?Caf=E9?= =?ISO-8859-1?Q?_au_lait?=", "Café au lait"),  # gap between words dropped
        (b"plain =?utf-8?q?x?= text", "plain x text"),
        (b"=?x-unknown?q?caf=C3=A9?=", "café"),
        (b"=?hex?q?=41?=", "A"),  # not a text codec: read as UTF-8
        (b"=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),
        (b"=?utf-8*en?q?hi?=", "hi"),  # RFC 2231 language
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
def test_encoded_words(value: bytes, text: str) -> None:
    assert decode_words(value) == text


def test_bare_lf_messages_read_alike() -> None:
    crlf = (MESSAGES / "attachment.eml").read_bytes()
    view = MessageView(crlf.replace(b"\r\n", b"\n"))
    assert read_value(view.envelope()) == read_value(MessageView(crlf).envelope())
    structure = read_value(view.bodystructure(False))
    assert isinstance(structure, list) and structure[-1] == b"mixed"
    assert view.section("1.1") == b"See attached."
    assert view.section("HEADER").endswith(b"Content-Language: en\n\n")


def test_no_header_no_body_and_no_blank_line() -> None:
    assert MessageView(b"").envelope() == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert read_value(MessageView(b"").bodystructure(False)) == [
        b"text",
        b"plain",
        [b"charset", b"us-ascii"],
        None,
        None,
        b"7bit",
        0,
        0,
    ]
    only_header = MessageView(b"Subject: hi\r\n")
    assert only_header.section("HEADER") == b"Subject: hi\r\n"
    assert only_header.section("TEXT") == b""
    only_body = MessageView(b"\r\nbody\r\n")
    assert only_body.section("TEXT") == b"body\r\n"
    assert only_body.section("HEADER") == b"\r\n"


def test_hostile_address_and_header_text_is_encoded_not_injected() -> None:
    raw = b'From: "a\\"b" <x@y>\r\nSubject: \x00 nul\r\nTo: (unclosed <q@r>\r\nCc: "unclosed <s@t>\r\n\r\n'
    envelope = MessageView(raw).envelope()
    value = read_value(envelope)
    assert isinstance(value, list)
    assert value[1] == b"\x00 nul"  # a literal, never a bare NUL in a quoted string
    assert value[2] == [[b'a"b', None, b"x", b"y"]]


def test_nesting_is_bounded() -> None:
    depth = MAX_DEPTH + 20
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    )
    view = MessageView(head + b"Content-Type: text/plain\r\n\r\ndeep\r\n")
    structure = view.bodystructure(True)
    assert structure.count(b'"mixed"') == MAX_DEPTH
    assert view.section(".".join(["1"] * (MAX_DEPTH + 5))) == b""

    rfc822 = b"Content-Type: message/rfc822\r\n\r\n" * (depth)
    structure = MessageView(rfc822 + b"Subject: x\r\n\r\nbody").bodystructure(False)
    assert structure.count(b'"rfc822"') == MAX_DEPTH


def test_part_count_and_header_fields_are_bounded() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(MAX_PARTS + 50))
    view = MessageView(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")
    assert view.bodystructure(False).count(b'("text" "plain"') == MAX_PARTS - 1  # the message is a part
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_FIELDS * 3))
    many = MessageView(fields + b"Subject: late\r\n\r\nbody")
    assert many.header_value("subject") == []  # past the bound: not read
    assert many.section("TEXT") == b"body"


def test_garbage_never_raises() -> None:
    pieces = [
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: multipart/digest; boundary="x"\r\n',
        b'Content-Type: ;;;=="\r\n',
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: ; =\r\n",
        b"Content-Language: ,,,\r\n",
        b'From: <<<@@@>>> ,,; :: "\r\n',
        b"To: group: a@b, (c) ; d\r\n",
        b" folded\r\n",
        b"\r\n",
        b"--x\r\n",
        b"--x--\r\n",
        b"=?utf-8?b?====?=",
        b"\xff\xfe\x00",
        b"\n",
        b"(((((",
    ]
    generator = random.Random(12)
    for _ in range(400):
        raw = b"".join(generator.choice(pieces) for _ in range(generator.randrange(1, 30)))
        view = MessageView(raw)
        read_value(view.envelope())
        read_value(view.bodystructure(True))
        view.section("1.2.MIME")
        view.section("HEADER.FIELDS (FROM)")
        view.header_value("to")
        view.body_text()


def test_sender_and_reply_to_absent_or_empty_are_from() -> None:
    raw = b"From: Ann <ann@fabrikam.test>\r\nSender:\r\nReply-To: team@fabrikam.test\r\nTo: ,\r\n\r\n"
    value = read_value(MessageView(raw).envelope())
    assert isinstance(value, list)
    ann = [[b"Ann", None, b"ann", b"fabrikam.test"]]
    assert value[2:6] == [ann, ann, [[None, None, b"team", b"fabrikam.test"]], None]


def test_a_line_without_a_colon_goes_with_the_field_before() -> None:
    raw = b"Subject: one\r\ngarbage line\r\nTo: bob@contoso.test\r\n\r\nbody"
    view = MessageView(raw)
    assert view.section("HEADER.FIELDS (SUBJECT)") == b"Subject: one\r\ngarbage line\r\n\r\n"
    assert view.header_value("to") == ["bob@contoso.test"]
    assert view.section("TEXT") == b"body"


def test_any_address_field_reads_as_addresses_and_well_formed_groups() -> None:
    """A NIL host means a group's start (RFC 3501 §7.4.2): every address has one, groups close."""
    pieces = [b"a", b"b.c", b"@", b"<", b">", b",", b";", b":", b" ", b'"q q"', b"(c)", b"[1.2]", b"\\", b"("]
    generator = random.Random(7)
    for _ in range(2000):
        value = b"".join(generator.choice(pieces) for _ in range(generator.randrange(1, 14)))
        open_group = False
        for name, _adl, mailbox, host in parse_addresses(value):
            if host is not None:
                assert mailbox, value
            elif mailbox is not None:
                assert name is None and not open_group, value  # a group starts
                open_group = True
            else:
                assert open_group, value  # a group ends
                open_group = False
        assert not open_group, value


def test_the_common_address_shapes_read_alike_by_the_fast_pattern_and_the_tokenizer() -> None:
    names = [b"", b"Ann Lee", b'"Doe, Ann"', b'""', b"  Bob  ", b"J. R. R.", b'"x"', b"O'Neil"]
    mailboxes = [b"ann@fabrikam.test", b"a.b+c@x.y", b"x@[1.2.3.4]", b"@y", b"z@", b"q"]
    generator = random.Random(3)
    for _ in range(2000):
        parts = []
        for _ in range(generator.randrange(1, 4)):
            name, mailbox = generator.choice(names), generator.choice(mailboxes)
            parts.append(name + b" <" + mailbox + b">" if name or generator.random() < 0.5 else mailbox)
        value = generator.choice([b",", b", ", b" , "]).join(parts)
        fast = _simple_addresses(value)
        assert fast is None or fast == _addresses_by_tokens(value), value
        assert parse_addresses(value) == _addresses_by_tokens(value), value
