"""Preview from the attacker's side: hostile HTML, ANSI escapes, bidirectional overrides and broken MIME
render as inert text; nothing is executed or fetched; every dimension is bounded."""

from __future__ import annotations

import socket
import time
import unicodedata

import pytest

from postroom.quarantine import PreviewAttachment, Rendering, html_to_text, inert, render
from postroom.quarantine.preview import PREVIEW_CHARS, PREVIEW_HEADER_CHARS

HTML_MESSAGE = (
    b'From: "Bank\x1b]0;pwned\x07" <security@bank.example>\r\n'
    b"Subject: =?utf-8?q?Verify_=1B[31mnow=1B[0m?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><title>t</title><style>body{display:none}</style>"
    b"<script>alert('x')</script><meta http-equiv=refresh content='0;url=http://evil.example/'></head>"
    b"<body onload=\"alert('y')\"><p>Dear&nbsp;customer,</p>"
    b'<p>Please <a href="http://evil.example/login">verify your account</a>.</p>'
    b'<img src="http://127.0.0.1:PORT/pixel.gif" alt="logo"><iframe src="http://evil.example/"></iframe>'
    b"<ul><li>one</li><li>two</li></ul><!-- hidden --><script>document.write('z')</script>"
    b"<p>\xe2\x80\xaeexe.pdf</p></body></html>\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="invoice\x1b[2J.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"TVqQAAMAAAAEAAAA\r\n--b--\r\n"
)


def dangerous(text: str) -> list[str]:
    """The characters in `text` that act on a terminal or hide text (a line feed is fine)."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")]


def everything(rendering: Rendering) -> str:
    parts = [f"{name}: {value}" for name, value in rendering.headers]
    parts += [a.filename + a.content_type for a in rendering.attachments]
    return "\n".join([*parts, rendering.text, *rendering.problems])


def test_hostile_html_renders_as_inert_text_and_fetches_nothing() -> None:
    with socket.socket() as pixel:  # where the message's image points: nothing may connect
        pixel.bind(("127.0.0.1", 0))
        pixel.listen()
        pixel.setblocking(False)
        port = str(pixel.getsockname()[1]).encode()
        rendering = render(HTML_MESSAGE.replace(b"PORT", port))
        with pytest.raises(BlockingIOError):
            pixel.accept()
    assert rendering.source == "text/html"
    assert rendering.text == (
        "Dear customer,\n\nPlease verify your account <http://evil.example/login>.\n[image: logo]\n\n"
        "- one\n\n- two\n\n\\u202eexe.pdf"
    )
    for word in ("alert", "script", "display:none", "document.write", "refresh", "hidden", "<p>"):
        assert word not in rendering.text
    headers = dict(rendering.headers)
    assert headers["From"] == '"Bank\\x1b]0;pwned\\x07" <security@bank.example>'
    assert headers["Subject"] == "Verify \\x1b[31mnow\\x1b[0m"
    assert rendering.attachments == (
        PreviewAttachment("invoice\\x1b[2J.exe", "application/octet-stream", 12),
    )
    assert dangerous(everything(rendering)) == []


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (
            b"Subject: plain\r\n\r\nline one\r\n\tindented\x1b[1m bold\x00\x7f\r\n",
            "line one\n        indented\\x1b[1m bold\\x00\\x7f",
        ),
        (  # the declared charset is honoured
            b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe\r\n",
            "Grüße",
        ),
        (  # a charset naming a codec that is no text encoding: read as UTF-8
            b"Content-Type: text/plain; charset=base64\r\n\r\nhello\r\n",
            "hello",
        ),
        (  # UTF-7 can smuggle controls; they come out escaped
            b"Content-Type: text/plain; charset=utf-7\r\n\r\n+ABsAWw-2J\r\n",
            "\\x1b[2J",
        ),
        (
            b"Content-Type: text/html\r\n\r\n<p>a<b>b</b></p><svg><text>no</text></svg>&lt;script&gt;",
            "ab\n<script>",
        ),
        (
            b"Content-Type: text/plain\r\n\r\n\xe2\x80\xa8sep\xe2\x80\x8bzw\xe2\x81\xa6iso",
            "\\u2028sep\\u200bzw\\u2066iso",
        ),
        (b"\r\n\r\nno header at all", "no header at all"),
        # No boundary line at all: the MIME walk shows the body as the one part it reads (mime.py).
        (b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno parts here", "no parts here"),
        (b"", ""),
    ],
)
def test_text_parts_render_inert(message: bytes, text: str) -> None:
    rendering = render(message)
    assert rendering.text.strip() == text
    assert dangerous(everything(rendering)) == []


def test_every_dimension_is_bounded() -> None:
    huge = b"Subject: " + b"s" * 10_000 + b"\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n" + b"x" * (PREVIEW_CHARS * 2)
    rendering = render(huge)
    assert rendering.truncated
    assert len(rendering.text) == PREVIEW_CHARS
    assert len(rendering.headers) == 200
    assert len(dict(rendering.headers)["Subject"]) == PREVIEW_HEADER_CHARS
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(100)
    )
    assert render(nested).problems  # cut at the MIME walk's depth, said so, no exception


def test_html_to_text_never_raises_on_broken_markup() -> None:
    for broken in (
        "<a href=",
        "<script>never closed",
        "<<<>>>&#xffffffff;&#0;",
        "</p></div><p",
        "<!--",
        "<![CDATA[",
    ):
        assert dangerous(inert(html_to_text(broken))) == []


@pytest.mark.parametrize("unit", ["<!--", "<script", "<", "<a '", "<![CDATA[", "<b>", "&#x41;", "<?"])
def test_hostile_markup_costs_linear_time(unit: str) -> None:
    """256 KB of unclosed markup renders in well under a second a core (quadratic: minutes)."""
    message = b"Content-Type: text/html\r\n\r\n" + (unit * (262_144 // len(unit))).encode()
    started = time.process_time()
    render(message)
    assert time.process_time() - started < 5.0
