"""The bounded MIME walk: what it reads from well-formed mail, from the malformed shapes other mail
software's corpora hold, and that hostile structures cost it little and never make it raise."""

from __future__ import annotations

import base64
import email
import time
from pathlib import Path

import pytest

from postroom.protection.mime import MimeLimits, ParsedMessage, parse_message
from tests.support import hostile_mime

HEAD = b"From: Ann <ann@contoso.example>\r\nTo: bob@fabrikam.test\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def parts_of(message: bytes, limits: MimeLimits | None = None) -> list[tuple[str, str, bytes]]:
    return [(p.content_type, p.filename, p.payload) for p in parse_message(message, limits).parts]


def test_a_plain_message_is_one_text_part() -> None:
    parsed = parse_message(HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n")
    assert [(p.content_type, p.charset, p.payload, p.depth) for p in parsed.parts] == [
        ("text/plain", "utf-8", b"Hello\r\n", 0)
    ]
    assert parsed.text == "Hello\r\n"
    assert parsed.problems == () and not parsed.truncated


def test_header_fields_are_unfolded_and_looked_up_in_any_case() -> None:
    parsed = parse_message(
        b"Received: from a\r\n\tby b\r\nReceived: from c\r\nSUBJECT:  folded\r\n  subject\r\n\r\nbody"
    )
    assert parsed.headers == (
        ("Received", "from a\tby b"),
        ("Received", "from c"),
        ("SUBJECT", "folded  subject"),
    )
    assert parsed.header("subject") == "folded  subject"
    assert parsed.header("x-missing") is None
    assert parsed.header_all("received") == ["from a\tby b", "from c"]


def test_an_mbox_from_line_is_not_a_field() -> None:
    parsed = parse_message(b"From ann@contoso.example Mon Jan  1 00:00:00 2024\r\n" + HEAD + b"\r\nbody")
    assert parsed.header("from") == "Ann <ann@contoso.example>"


def test_a_multipart_message_yields_its_leaves_in_order_with_their_names() -> None:
    message = HEAD + (
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
        b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
        b"--inner\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>caf=E9 <script>alert(1)</script>&amp; more</p>\r\n--inner--\r\n"
        b"--outer\r\nContent-Type: image/gif; name=dot.gif\r\n"
        b"Content-Disposition: attachment; filename=dot.gif\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(GIF).replace(b"\n", b"\r\n")
        + b"--outer--\r\nepilogue\r\n"
    )
    parsed = parse_message(message)
    assert [(p.content_type, p.filename, p.disposition, p.payload, p.depth) for p in parsed.parts] == [
        ("text/plain", "", "", b"plain text", 2),
        ("text/html", "", "", "<p>café <script>alert(1)</script>&amp; more</p>".encode("latin-1"), 2),
        ("image/gif", "dot.gif", "attachment", GIF, 1),
    ]
    assert parsed.text.split() == ["plain", "text", "café", "&", "more"]
    assert parsed.problems == ()


def test_an_attached_message_is_walked() -> None:
    inner = b"Subject: inner\r\nContent-Type: application/octet-stream; name=a.bin\r\n\r\nDATA"
    message = (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n'
    )
    parsed = parse_message(message + inner + b"\r\n--b--\r\n")
    assert [(p.filename, p.payload, p.depth) for p in parsed.parts] == [("a.bin", b"DATA", 2)]
    assert parsed.header("subject") == "test"  # the inner message's fields are not the message's


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        (b"Content-Disposition: attachment; filename=plain.exe", ("plain.exe",)),
        (b'Content-Disposition: attachment; filename="quoted \\"name\\".exe"', ('quoted "name".exe',)),
        (b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20invoice.exe", ("€ invoice.exe",)),
        (b"Content-Disposition: attachment; filename*0*=utf-8''a%20; filename*1=b.exe", ("a b.exe",)),
        (b'Content-Type: application/x; name="=?utf-8?B?0KHQv9C40YHQvtC6LmRvYw==?="', ("Список.doc",)),
        (b'Content-Type: application/x; name="=?koi8-r?Q?=F3=D0?= =?koi8-r?Q?x.exe?="', ("Спx.exe",)),
        # Clients disagree on which name wins: every one is kept for the attachment filter.
        (
            b"Content-Type: application/x; name=shown.txt\r\n"
            b"Content-Disposition: attachment; filename=real.exe",
            ("real.exe", "shown.txt"),
        ),
        (b"Content-Disposition: attachment; filename=a.txt; filename*=utf-8''b.exe", ("b.exe", "a.txt")),
        (b"Content-Type: application/x; filename=wrong-field.exe", ("wrong-field.exe",)),
    ],
)
def test_file_names_in_every_form_clients_write(fields: bytes, names: tuple[str, ...]) -> None:
    part = parse_message(HEAD + fields + b"\r\n\r\nx").parts[0]
    assert part.filenames == names
    assert part.filename == names[0]


def test_rfc2231_parameters_and_folded_boundaries() -> None:
    folded = HEAD + b'Content-Type: multipart/mixed; boundary="simple\r\n boundary"\r\n\r\n'
    folded += b"--simple boundary\r\n\r\none\r\n--simple boundary--\r\n"
    assert parts_of(folded) == [("text/plain", "", b"one")]
    extended = HEAD + b"Content-Type: multipart/signed; boundary*=\"us-ascii''EeQf\"\r\n\r\n"
    extended += b"--EeQf\r\nContent-Type: text/plain; charset*=us-ascii''utf-8\r\n\r\ntwo\r\n--EeQf--\r\n"
    parsed = parse_message(extended)
    assert [(p.payload, p.charset) for p in parsed.parts] == [(b"two", "utf-8")]


# Shapes from the malformed-mail corpora of other mail software (Apache James mime4j's test messages,
# Python's email tests, the "bad MIME" evasion toolkit), written anew: what a lenient client shows.
CORPUS_SHAPES = {
    # An inner boundary that extends the outer one ("b" and "b-1"): not an outer delimiter.
    "nested boundary extends its parent": (
        b'Content-Type: multipart/mixed; boundary="--b.1"\r\n\r\n----b.1\r\n'
        b'Content-Type: multipart/alternative; boundary="--b.1-1"\r\n\r\n'
        b"----b.1-1\r\nContent-Type: text/plain\r\n\r\ntext\r\n----b.1-1--\r\n"
        b"----b.1\r\nContent-Type: application/pdf; name=r.pdf\r\n\r\n%PDF\r\n----b.1--\r\n",
        [("text/plain", "", b"text"), ("application/pdf", "r.pdf", b"%PDF")],
    ),
    # A nested multipart reusing its parent's boundary (an old Outlook Express bug): the part after the
    # inner close delimiter is still read.
    "nested multipart reuses the boundary": (
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\n'
        b'Content-Type: multipart/alternative; boundary="X"\r\n\r\n'
        b"--X\r\nContent-Type: text/plain\r\n\r\ntext\r\n--X--\r\n\r\n"
        b"--X\r\nContent-Type: application/octet-stream; name=late.exe\r\n\r\nMZ\r\n--X--\r\n",
        [
            ("text/plain", "", b""),
            ("text/plain", "", b"text"),
            ("text/plain", "", b""),
            ("application/octet-stream", "late.exe", b"MZ"),
        ],
    ),
    # A line like the delimiter but one space short of the boundary's trailing spaces is body.
    "boundary with trailing spaces": (
        b'Content-Type: multipart/mixed; boundary="b?  "\r\n\r\n'
        b"--b?  \r\n\r\nbody\r\n--b? \r\nmore\r\n--b?  --\r\n",
        [("text/plain", "", b"body\r\n--b? \r\nmore")],
    ),
    # RFC 2046: what follows the boundary on a delimiter line (after white space) is not body.
    "text after the delimiter": (
        b'Content-Type: multipart/mixed; boundary="bd"\r\n\r\n--bd ignored text\r\n'
        b"Content-Type: text/plain\r\n\r\nfirst\r\n--bd-- ignored too\r\nepilogue\r\n",
        [("text/plain", "", b"first")],
    ),
    "empty parts between delimiters": (
        b'Content-Type: multipart/mixed; boundary="e"\r\n\r\n'
        b"--e\r\n--e\r\nContent-Type: text/plain\r\n\r\nx\r\n--e--\r\n",
        [("text/plain", "", b""), ("text/plain", "", b"x")],
    ),
    # No parts at all, or a missing start delimiter: the body is read as text, so it is still scanned.
    "close delimiter only": (
        b'Content-Type: multipart/mixed; boundary="n"\r\n\r\npreamble\r\n--n--\r\n',
        [("text/plain", "", b"preamble\r\n--n--\r\n")],
    ),
    "boundary parameter missing": (
        b"Content-Type: multipart/mixed\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nx\r\n--zz--\r\n",
        [("text/plain", "", b"--zz\r\nContent-Type: text/plain\r\n\r\nx\r\n--zz--\r\n")],
    ),
    "close delimiter missing": (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n\r\nfirst\r\n'
        b"--o\r\nContent-Type: application/x; name=t.exe\r\n\r\nMZ tail",
        [("text/plain", "", b"first"), ("application/x", "t.exe", b"MZ tail")],
    ),
    # base64 where it is not allowed (message/rfc822), and a multipart's own Content-Type split badly.
    "base64-encoded attached message": (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"Subject: in\r\nContent-Type: text/plain\r\n\r\nText body"),
        [("text/plain", "", b"Text body")],
    ),
    "mixed and bare line ends": (
        b'Content-Type: multipart/mixed; boundary="m"\n\n--m\rContent-Type: text/plain\r\rx\n'
        b"--m\r\nContent-Type: application/x; name=y.exe\n\nMZ\r\n--m--\n",
        [("text/plain", "", b"x"), ("application/x", "y.exe", b"MZ")],
    ),
    "a continuation line first": (
        b" folded\r\nContent-Type: text/plain\r\n\r\nx",
        [("text/plain", "", b"x")],
    ),
    "a header line without a colon ends the header": (
        b"Content-Type: text/plain\r\nnot a field\r\nX-After: y\r\n\r\nz",
        [("text/plain", "", b"not a field\r\nX-After: y\r\n\r\nz")],
    ),
    "8-bit octets in a field name": (
        b"Inval\xecd: v\r\nContent-Type: text/html\r\n\r\n<b>",
        [("text/html", "", b"<b>")],
    ),
    # A field given twice is read the way that shows the most (clients differ on which one wins).
    "duplicate Content-Type: the first type, every name": (
        b"Content-Type: text/plain\r\nContent-Type: application/x; name=a.exe\r\n\r\nx",
        [("text/plain", "a.exe", b"x")],
    ),
    "duplicate Content-Type: the multipart one": (
        b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=d\r\n\r\n"
        b"--d\r\nContent-Type: application/x; name=b.exe\r\n\r\nMZ\r\n--d--\r\n",
        [("application/x", "b.exe", b"MZ")],
    ),
    "duplicate boundary: the one that occurs": (
        b'Content-Type: multipart/mixed; boundary="YY"; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: application/x; name=c.exe\r\n\r\nMZ\r\n--XX--\r\n",
        [("application/x", "c.exe", b"MZ")],
    ),
    "duplicate transfer encoding: the decoding one": (
        b"Content-Type: application/x\r\nContent-Transfer-Encoding: 7bit\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nQUJD",
        [("application/x", "", b"ABC")],
    ),
    "inline uuencode in a text body": (
        b"Content-Type: text/plain\r\n\r\nsee below\r\n\r\nbegin 644 u.zip\r\n#04)#\r\n`\r\nend\r\n",
        [
            ("text/plain", "", b"see below\r\n\r\nbegin 644 u.zip\r\n#04)#\r\n`\r\nend\r\n"),
            ("application/octet-stream", "u.zip", b"ABC"),
        ],
    ),
    "transfer encoding in odd case and padding": (
        b"Content-Type: application/x; name=b.bin\r\nContent-Transfer-Encoding:  BASE64 \r\n\r\nQUJD",
        [("application/x", "b.bin", b"ABC")],
    ),
    # Padding in the middle of base64 (two encoded runs joined): binascii stops at the first.
    "base64 runs joined after padding": (
        b"Content-Type: application/x\r\nContent-Transfer-Encoding: base64\r\n\r\nQQ==\r\nQkM=\r\n",
        [("application/x", "", b"ABC")],
    ),
    "base64 with junk characters": (
        b"Content-Type: application/x\r\nContent-Transfer-Encoding: base64\r\n\r\nQU!J*D\x00R\xffA\r\n",
        [("application/x", "", b"ABCD")],
    ),
    "uuencode": (
        b"Content-Type: application/x; name=u.com\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
        b"begin 644 u.com\r\n#04)#\r\n`\r\nend\r\n",
        [("application/x", "u.com", b"ABC")],
    ),
}


@pytest.mark.parametrize("case", CORPUS_SHAPES)
def test_malformed_shapes_read_as_lenient_clients_read_them(case: str) -> None:
    message, expected = CORPUS_SHAPES[case]
    assert parts_of(HEAD + message) == expected


def test_hostile_charsets_are_not_used() -> None:
    parsed = parse_message(hostile_mime.bad_charsets())
    assert len(parsed.parts) == 4
    assert "plain" in parsed.text


@pytest.mark.parametrize(
    ("limits", "message", "problem"),
    [
        (MimeLimits(max_depth=2), hostile_mime.deep_multipart(5), "nesting deeper than 2"),
        (MimeLimits(max_depth=1), hostile_mime.deep_rfc822(3), "nesting deeper than 1"),
        (MimeLimits(max_parts=10), hostile_mime.many_parts(50), "more than 10 parts"),
        (
            MimeLimits(max_decoded_octets=1000),
            hostile_mime.many_parts(20, leaf=b"\r\n" + b"x" * 99),
            "decoded parts",
        ),
        (
            MimeLimits(max_header_octets=1000),
            hostile_mime.many_header_fields(500),
            "header block over the limit",
        ),
        (MimeLimits(max_parameter_octets=500), hostile_mime.filename_continuations(100), "over the limit"),
    ],
)
def test_a_limit_cuts_the_walk_and_says_so(limits: MimeLimits, message: bytes, problem: str) -> None:
    parsed = parse_message(message, limits)
    assert parsed.truncated
    assert any(problem in p for p in parsed.problems), parsed.problems
    within(parsed, limits)


def test_text_is_bounded_and_a_long_header_line_is_cut() -> None:
    limits = MimeLimits(max_text_chars=100, max_line_octets=1000)
    parsed = parse_message(hostile_mime.huge_header_line(5000) + b"x" * 1000, limits)
    assert len(parsed.text) == 100
    assert len(parsed.header("x-long") or "") == 1000 - len("X-Long: ")
    assert "header line over the limit" in parsed.problems


def within(parsed: ParsedMessage, limits: MimeLimits) -> None:
    assert len(parsed.parts) <= limits.max_parts
    assert all(part.depth <= limits.max_depth for part in parsed.parts)
    assert sum(len(part.payload) for part in parsed.parts) <= limits.max_decoded_octets
    assert len(parsed.text) <= limits.max_text_chars
    assert sum(len(k) + len(v) for k, v in parsed.headers) <= limits.max_header_octets


# Cases that are malformed on purpose: each must be reported in `problems`.
WELL_FORMED = {"uuencoded attachment", "NULs, 1 MB", "8-bit headers x1,000", "mixed line ends", "empty"}
WELL_FORMED |= {"headers only", "body only", "hostile charsets", "HTML <script> x200,000"}
WELL_FORMED |= {
    "HTML unclosed tags x200,000",
    "broken quoted-printable, 5 MB",
    "boundary near-misses x1,000,000",
}


@pytest.mark.parametrize("case", hostile_mime.CASES)
def test_hostile_structures_parse_quickly_within_the_limits(
    case: str, record_property: pytest.RecordProperty
) -> None:
    message = hostile_mime.CASES[case]()
    started = time.perf_counter()
    parsed = parse_message(message)
    elapsed = time.perf_counter() - started
    record_property("seconds", round(elapsed, 4))
    within(parsed, MimeLimits())
    # Linear, not quadratic: the worst case measured is ~0.1 s on a loaded 2-core machine.
    assert elapsed < 2.0, f"{case}: {elapsed:.2f} s"
    if case not in WELL_FORMED:
        assert parsed.problems, case


def test_random_mutations_never_raise() -> None:
    started = time.perf_counter()
    for message in hostile_mime.mutations(seed=20261130, count=3000):
        parsed = parse_message(message)
        within(parsed, MimeLimits())
        assert not any(p.startswith("unparseable") for p in parsed.problems), parsed.problems
    assert time.perf_counter() - started < 10


def test_pythons_email_test_corpus() -> None:
    """Every message of CPython's own email test data (shipped with the interpreter)."""
    data = Path(email.__file__).parent.parent / "test" / "test_email" / "data"
    messages = sorted(data.glob("msg_*.txt"))
    assert messages, (
        f"{data} is missing: the interpreter's test suite ships Python's email corpus; install it "
        "(Debian: libpython3.11-testsuite; python.org and pyenv builds include it)"
    )
    for path in messages:
        parsed = parse_message(path.read_bytes())
        within(parsed, MimeLimits())
        assert parsed.parts, path.name
        assert not any(p.startswith("unparseable") for p in parsed.problems), (path.name, parsed.problems)
    # msg_15: a nested multipart that reuses its parent's boundary; the image after it is still read.
    late = parse_message((data / "msg_15.txt").read_bytes()).parts[-1]
    assert (late.content_type, late.filename, late.disposition) == ("image/gif", "xx.gif", "attachment")
