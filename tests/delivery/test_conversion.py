"""Remote domain content conversion: type, line wrap, charset; octets unchanged when none applies."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from postroom.delivery import convert_for_remote_domain
from postroom.delivery.conversion import MAX_DEPTH, MAX_PARTS, html_to_text, wrap_text
from postroom.model.outbound import ContentType, RemoteDomainSettings

HEAD = (
    b"From: Ann <ann@contoso.example>\r\n"
    b"To: bob@fabrikam.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a subject long enough that a careless writer would fold it\r\n"
    b"X-Odd:   spaced   value\r\n"
    b"MIME-Version: 1.0\r\n"
)
ALTERNATIVE = HEAD + (
    b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello plain\r\n"
    b"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "<p>Hello <b>Grüße</b> &amp; more</p>\r\n".encode()
    + b"--b1--\r\n"
)
HTML_ONLY = HEAD + (
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "<html><head><style>p {color: red}</style></head><body><h1>Grüße</h1>"
    "<p>Read <a href='https://contoso.example/x'>the report</a>.</p><ul><li>one</li><li>two</li></ul>"
    "<script>alert(1)</script></body></html>\r\n".encode()
)
TEXT_ONLY = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "Grüße <b>not markup</b>\r\n".encode()
MIXED = HEAD + (
    b'Content-Type: multipart/mixed; boundary="m"\r\n\r\npreamble\r\n'
    b"--m\r\n" + ALTERNATIVE[len(HEAD) :].replace(b"b1", b"b2") + b"\r\n"
    b"--m\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=page.html\r\n\r\n"
    b"<p>attached page</p>\r\n"
    b"--m--\r\nepilogue\r\n"
)


def parse(octets: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(octets)
    assert isinstance(message, EmailMessage)
    return message


def head_of(octets: bytes) -> bytes:
    return octets.split(b"\r\n\r\n", 1)[0]


def leaves(message: EmailMessage) -> list[tuple[str, str]]:
    """(type, text) of each leaf part, line ends as LF and without the last one (it may be the boundary's)."""
    return [
        (part.get_content_type(), str(part.get_content()).replace("\r\n", "\n").rstrip("\n"))
        for part in message.walk()
        if not part.is_multipart()
    ]


@pytest.mark.parametrize("octets", [ALTERNATIVE, HTML_ONLY, TEXT_ONLY, MIXED])
def test_defaults_return_the_very_octets(octets: bytes) -> None:
    assert convert_for_remote_domain(octets, RemoteDomainSettings()) is octets


@pytest.mark.parametrize(
    ("octets", "content_type"),
    [
        (TEXT_ONLY, ContentType.MIME_TEXT),  # already text only
        (HTML_ONLY, ContentType.MIME_HTML),  # already HTML only
        (TEXT_ONLY, ContentType.MIME_HTML_TEXT),
    ],
)
def test_nothing_to_convert_returns_the_octets_unchanged(octets: bytes, content_type: ContentType) -> None:
    settings = RemoteDomainSettings(content_type=content_type, charset="iso-8859-1", line_wrap=80)
    assert convert_for_remote_domain(octets, settings) == octets


def test_text_only_keeps_the_plain_alternative() -> None:
    converted = convert_for_remote_domain(
        ALTERNATIVE, RemoteDomainSettings(content_type=ContentType.MIME_TEXT)
    )
    message = parse(converted)
    assert message.get_content_type() == "text/plain"
    assert leaves(message) == [("text/plain", "Hello plain")]
    # The other header fields are written back as they were (none refolded; one space after the colon).
    kept = [*head_of(ALTERNATIVE).split(b"\r\n")[:3], b"X-Odd: spaced   value"]
    assert head_of(converted).split(b"\r\n")[:4] == kept


def test_html_only_keeps_the_html_alternative_and_its_8bit_text() -> None:
    converted = convert_for_remote_domain(
        ALTERNATIVE, RemoteDomainSettings(content_type=ContentType.MIME_HTML)
    )
    message = parse(converted)
    assert leaves(message) == [("text/html", "<p>Hello <b>Grüße</b> &amp; more</p>")]


def test_an_html_only_body_becomes_readable_text() -> None:
    converted = convert_for_remote_domain(HTML_ONLY, RemoteDomainSettings(content_type=ContentType.MIME_TEXT))
    message = parse(converted)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert converted.isascii()  # quoted-printable: 7-bit safe for any destination
    text = message.get_content().replace("\r\n", "\n")
    assert text == "Grüße\nRead the report <https://contoso.example/x>.\n- one\n- two\n"
    assert "alert" not in text and "color" not in text


def test_a_text_only_body_becomes_escaped_html() -> None:
    converted = convert_for_remote_domain(TEXT_ONLY, RemoteDomainSettings(content_type=ContentType.MIME_HTML))
    message = parse(converted)
    assert message.get_content_type() == "text/html"
    assert "Grüße &lt;b&gt;not markup&lt;/b&gt;" in message.get_content()


def test_nested_alternative_converted_attachments_left_alone() -> None:
    converted = convert_for_remote_domain(MIXED, RemoteDomainSettings(content_type=ContentType.MIME_TEXT))
    message = parse(converted)
    assert leaves(message) == [("text/plain", "Hello plain"), ("text/html", "<p>attached page</p>")]
    assert message.preamble == "preamble" and b"epilogue" in converted


def test_an_alternative_without_the_wanted_type_converts_the_other() -> None:
    only_html = ALTERNATIVE.replace(b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello plain\r\n", b"")
    only_html = only_html.replace(b"--b1\r\n--b1", b"--b1")
    converted = convert_for_remote_domain(only_html, RemoteDomainSettings(content_type=ContentType.MIME_TEXT))
    assert leaves(parse(converted)) == [("text/plain", "Hello Grüße & more")]


def test_charset_declared_where_none_is() -> None:
    message = HEAD + b"Content-Type: text/plain\r\n\r\nHello\r\n"
    converted = convert_for_remote_domain(message, RemoteDomainSettings(charset="iso-8859-1"))
    assert parse(converted).get_content_charset() == "iso-8859-1"
    assert converted.endswith(b"\r\n\r\nHello\r\n")


def test_charset_declared_on_a_message_without_mime() -> None:
    message = b"From: a@contoso.example\r\nSubject: old\r\n\r\nplain old mail\r\n"
    converted = convert_for_remote_domain(message, RemoteDomainSettings(charset="windows-1252"))
    parsed = parse(converted)
    assert (parsed.get_content_charset(), parsed["MIME-Version"]) == ("windows-1252", "1.0")


def test_line_wrap_rewraps_long_text_lines() -> None:
    long_line = " ".join(["word"] * 40)  # 199 characters
    message = (
        HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + long_line.encode() + b"\r\nshort\r\n"
    )
    converted = convert_for_remote_domain(message, RemoteDomainSettings(line_wrap=40))
    text = parse(converted).get_content().replace("\r\n", "\n")
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= 40 for line in lines) and lines[-1] == "short"
    assert " ".join(lines[:-1]) == long_line


def test_flowed_wrap_reflows_to_the_original() -> None:
    paragraph = "> " + " ".join(f"w{i}" for i in range(60))
    wrapped = wrap_text(paragraph, 30, flowed=True)
    lines = wrapped.split("\n")
    assert all(len(line) <= 30 for line in lines) and all(line.startswith("> ") for line in lines)
    assert all(line.endswith(" ") for line in lines[:-1]) and not lines[-1].endswith(" ")
    # RFC 3676 reflow: strip the quote and stuffing, join soft-broken lines.
    assert "> " + "".join(line[2:] for line in lines) == paragraph


def test_flowed_wrap_space_stuffs_continuations_and_doubles_for_delsp() -> None:
    wrapped = wrap_text("aaaa bbbb >cc From dd", 8, flowed=True, delsp=True)
    assert wrapped.split("\n") == ["aaaa  ", "bbbb  ", " >cc  ", " From dd"]


def test_hard_wrap_keeps_long_words_and_leaves_no_trailing_space() -> None:
    word = "x" * 50
    assert wrap_text(f"a {word} b", 20).split("\n") == ["a", word, "b"]


@pytest.mark.parametrize("too_many", ["parts", "depth"])
def test_over_the_mime_limits_the_message_is_left_alone(too_many: str) -> None:
    html_part = b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n"
    if too_many == "parts":
        body = b"".join(b"--p\r\n" + html_part for _ in range(MAX_PARTS)) + b"--p--\r\n"
        message = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + body
    else:
        message = html_part
        for level in range(MAX_DEPTH + 1):
            boundary = f"d{level}".encode()
            message = (
                b'Content-Type: multipart/mixed; boundary="'
                + boundary
                + b'"\r\n\r\n--'
                + boundary
                + b"\r\n"
                + message
                + b"--"
                + boundary
                + b"--\r\n"
            )
        message = HEAD + message
    settings = RemoteDomainSettings(content_type=ContentType.MIME_TEXT)
    assert convert_for_remote_domain(message, settings) is message


def test_just_under_the_part_limit_is_converted() -> None:
    html_part = b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n"
    body = b"".join(b"--p\r\n" + html_part for _ in range(MAX_PARTS - 1)) + b"--p--\r\n"
    message = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + body
    converted = convert_for_remote_domain(message, RemoteDomainSettings(content_type=ContentType.MIME_TEXT))
    assert {kind for kind, _ in leaves(parse(converted))} == {"text/plain"}


def test_html_to_text_decodes_entities_and_drops_scripts() -> None:
    assert html_to_text("<div>a&nbsp;&lt;b&gt;<br>c</div><script>x()</script>") == "a <b>\nc\n"
