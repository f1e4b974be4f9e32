"""Hostile MIME structures, generated: what a stranger can send to make a MIME parser slow, deep or wrong.

Each case is a name and the message octets (built on demand: some are tens of megabytes). They are the
shapes the malformed-message corpora of other mail software exercise (Python's email tests, Apache
James mime4j's test messages, the "bad MIME" evasion toolkit), pushed to sizes that find quadratic
paths: deep nesting, many parts, huge header lines, unterminated quotes, boundary near-misses, broken
encodings, NULs and 8-bit garbage. `tests/protection/test_mime.py` runs `parse_message` over every one
and times it; `bench/protection_malware.py` prints the timings.

Run it alone to write the cases to a directory: ``.venv/bin/python -m tests.support.hostile_mime DIR``.
"""

from __future__ import annotations

import base64
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

HEAD = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hostile\r\nMIME-Version: 1.0\r\n"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def deep_multipart(levels: int) -> bytes:
    """`levels` nested multipart/mixed, each with its own boundary, a text leaf at the bottom."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return HEAD + opening + b"Content-Type: text/plain\r\n\r\nbottom" + closing


def deep_same_boundary(levels: int) -> bytes:
    """Nesting where every level reuses one boundary: only the outer level's delimiters exist."""
    opening = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n' * levels
    return HEAD + opening + b"Content-Type: text/plain\r\n\r\nbottom\r\n--x--\r\n"


def deep_rfc822(levels: int) -> bytes:
    """`levels` message/rfc822 parts inside each other."""
    return HEAD + b"Content-Type: message/rfc822\r\n\r\n" * levels + b"Subject: bottom\r\n\r\nbottom\r\n"


def many_parts(count: int, *, leaf: bytes = b"Content-Type: text/plain\r\n\r\nx\r\n") -> bytes:
    body = b"".join(b"--p\r\n" + leaf for _ in range(count))
    return HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + body + b"--p--\r\n"


def many_empty_multiparts(count: int) -> bytes:
    """Containers with no children: parts that produce no leaf."""
    leaf = b'Content-Type: multipart/mixed; boundary="e"\r\n\r\n--e--\r\n'
    return many_parts(count, leaf=leaf)


def huge_header_line(octets: int) -> bytes:
    return HEAD + b"X-Long: " + b"a" * octets + b"\r\n\r\nbody\r\n"


def huge_folded_header(lines: int) -> bytes:
    return HEAD + b"X-Folded: start\r\n" + b" continued\r\n" * lines + b"\r\nbody\r\n"


def many_header_fields(count: int) -> bytes:
    return HEAD + b"".join(b"X-F%d: v\r\n" % i for i in range(count)) + b"\r\nbody\r\n"


def no_header_end(octets: int) -> bytes:
    """A header block that never ends: no empty line, no body."""
    return HEAD + b"X-Filler: y\r\n" * (octets // 13)


def header_without_colon() -> bytes:
    return HEAD + b"this line has no colon\r\nX-After: lost\r\n\r\nbody\r\n"


def first_line_continuation() -> bytes:
    return b" folded first\r\n" + HEAD + b"\r\nbody\r\n"


def unterminated_quote(octets: int) -> bytes:
    return HEAD + b'Content-Type: multipart/mixed; boundary="' + b"q" * octets + b"\r\n\r\nbody\r\n"


def many_quotes(count: int) -> bytes:
    """Many unterminated quoted strings: a quadratic path of lenient parameter parsers."""
    return HEAD + b"Content-Type: text/plain; a=" + b'"\\' * count + b"\r\n\r\nbody\r\n"


def many_parameters(count: int) -> bytes:
    params = b"".join(b"; p%d=v" % i for i in range(count))
    return HEAD + b"Content-Type: text/plain" + params + b"\r\n\r\nbody\r\n"


def filename_continuations(sections: int) -> bytes:
    """RFC 2231 filename*N*= continuations, `sections` of them, the last one carrying the extension."""
    parts = b"".join(b"; filename*%d*=a%%41" % i for i in range(sections))
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n--c\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment"
        + parts
        + b"; filename*%d*=.exe\r\n\r\nMZ\r\n--c--\r\n" % sections
    )


def sparse_continuations() -> bytes:
    """Continuation indexes that are huge, repeated and out of order."""
    return (
        HEAD + b"Content-Type: application/octet-stream; name*99999999999=x; name*3=.exe; name*0=a; "
        b"name*0=b; name*-1=c\r\n\r\ndata\r\n"
    )


def boundary_near_misses(lines: int) -> bytes:
    """A one-letter boundary and a body of lines that start like it but are not delimiters."""
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n--a\r\n\r\n'
        + b"--ab\r\n" * lines
        + b"--a--\r\n"
    )


def long_boundary(octets: int) -> bytes:
    boundary = b"B" * octets
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\r\n\r\n--'
        + boundary
        + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--"
        + boundary
        + b"--\r\n"
    )


def missing_boundary_parameter() -> bytes:
    return (
        HEAD + b"Content-Type: multipart/mixed\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nx\r\n--zz--\r\n"
    )


def boundary_never_found() -> bytes:
    return HEAD + b'Content-Type: multipart/mixed; boundary="nothere"\r\n\r\nonly a body, no delimiter\r\n'


def no_close_delimiter() -> bytes:
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\n'
        b"first\r\n--o\r\nContent-Type: application/octet-stream; name=last.exe\r\n\r\nMZ tail"
    )


def broken_base64(octets: int) -> bytes:
    """base64 with junk characters, wrong padding in the middle and text after the padding."""
    good = base64.b64encode(EICAR)
    junk = b"!!*\x00\xff" + good[:10] + b"=" + good[10:] + b"==trailing text\r\n"
    filler = (b"QUJD?RA==\r\n" * (octets // 11))[:octets]
    return (
        HEAD + b"Content-Type: application/octet-stream; name=a.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + junk + filler
    )


def broken_quoted_printable(octets: int) -> bytes:
    return (
        HEAD
        + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + (b"=\r\n=ZZ=4=" * (octets // 10))
        + b"=\r\n"
    )


def uuencoded_attachment() -> bytes:
    import binascii

    lines = b"".join(binascii.b2a_uu(EICAR[i : i + 45]) for i in range(0, len(EICAR), 45))
    return (
        HEAD + b"Content-Type: application/octet-stream; name=x.com\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x.com\r\n" + lines + b"`\r\nend\r\n"
    )


def nuls(octets: int) -> bytes:
    return (
        HEAD.replace(b"hostile", b"ho\x00stile")
        + b"Content-Type: text/plain;\x00 charset=\x00utf-8\r\n\r\n"
        + b"\x00" * octets
    )


def eight_bit_garbage(octets: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(octets))


def eight_bit_headers(count: int, seed: int = 8) -> bytes:
    rng = random.Random(seed)
    fields = b"".join(
        b"X-8bit-%d: " % i + bytes(rng.randrange(128, 256) for _ in range(40)) + b"\r\n" for i in range(count)
    )
    return HEAD + fields + b"Content-Type: text/plain; charset=\xff\xfe\r\n\r\n\xc3\x28\xa0\xa1\r\n"


def bare_cr_lines(count: int) -> bytes:
    return (HEAD + b'Content-Type: multipart/mixed; boundary="r"\r\n\r\n').replace(b"\r\n", b"\r") + (
        b"--r\rContent-Type: text/plain\r\rline\r" * count
    )


def mixed_line_ends() -> bytes:
    return (
        b"From: a@example.com\nTo: b@example.net\r\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\n--m\nContent-Type: text/plain\r\n\r\nx\n'
        b"--m\r\nContent-Type: application/octet-stream; name=y.exe\n\nMZ\r\n--m--\n"
    )


def html_script_openings(count: int) -> bytes:
    """HTML that opens <script> many times and never closes it: quadratic for lazy regexes."""
    return HEAD + b"Content-Type: text/html\r\n\r\n" + b"<script>a<b " * count


def html_unclosed_tags(count: int) -> bytes:
    return HEAD + b"Content-Type: text/html\r\n\r\n" + b"<a href='" * count


def many_encoded_words(count: int) -> bytes:
    words = b" ".join(b"=?utf-8?q?w=C3=A4?=" for _ in range(count))
    return (
        HEAD
        + b"Subject: "
        + words
        + b'\r\nContent-Type: application/octet-stream; name="'
        + words
        + b'.exe"\r\n\r\nbody\r\n'
    )


def bad_charsets() -> bytes:
    return (
        HEAD + b'Content-Type: multipart/alternative; boundary="c"\r\n\r\n'
        b"--c\r\nContent-Type: text/plain; charset=punycode\r\n\r\n" + b"a-" * 50_000 + b"\r\n"
        b"--c\r\nContent-Type: text/plain; charset=idna\r\n\r\n" + b"xn--" * 20_000 + b"\r\n"
        b"--c\r\nContent-Type: text/plain; charset=zlib\r\n\r\nnot zlib\r\n"
        b"--c\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\nplain\r\n--c--\r\n"
    )


def duplicate_headers() -> bytes:
    return (
        HEAD + b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=d\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n\r\nQUJD\r\n"
    )


def empty() -> bytes:
    return b""


def headers_only() -> bytes:
    return HEAD


def body_only() -> bytes:
    return b"\r\n" + b"just a body\r\n" * 10


def mutations(seed: int, count: int) -> Iterator[bytes]:
    """Random byte mutations of a well-formed multipart message: deletions, duplications, flips."""
    rng = random.Random(seed)
    base = (
        HEAD + b'Content-Type: multipart/mixed; boundary="==b=="\r\n\r\npreamble\r\n--==b==\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Hello =C3=A4\r\n--==b==\r\nContent-Type: application/zip; name*=utf-8''a%20b.zip\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?b?YS56aXA=?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(EICAR * 3).replace(b"\n", b"\r\n")
        + b"--==b==\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--==b==--\r\n"
    )
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 12)):
            at = rng.randrange(len(data))
            action = rng.randrange(4)
            if action == 0:
                del data[at : at + rng.randrange(1, 40)]
            elif action == 1:
                data[at:at] = data[at : at + rng.randrange(1, 80)] * rng.randrange(1, 6)
            elif action == 2:
                data[at] = rng.randrange(256)
            else:
                data[at:at] = rng.choice([b"\r\n", b"\n--==b==\r\n", b'"', b";", b"=", b"\x00", b"--"])
        yield bytes(data)


# name -> builder; sizes chosen to find quadratic paths in a second, not to fill memory.
CASES: dict[str, Callable[[], bytes]] = {
    "deep multipart x10,000": lambda: deep_multipart(10_000),
    "deep multipart, one boundary x10,000": lambda: deep_same_boundary(10_000),
    "deep message/rfc822 x10,000": lambda: deep_rfc822(10_000),
    "100,000 parts": lambda: many_parts(100_000),
    "100,000 empty multiparts": lambda: many_empty_multiparts(100_000),
    "1 MB header line": lambda: huge_header_line(1_000_000),
    "100,000 folded header lines": lambda: huge_folded_header(100_000),
    "100,000 header fields": lambda: many_header_fields(100_000),
    "header block without end, 10 MB": lambda: no_header_end(10_000_000),
    "header line without colon": header_without_colon,
    "first line a continuation": first_line_continuation,
    "unterminated quote, 1 MB": lambda: unterminated_quote(1_000_000),
    "100,000 unterminated quotes": lambda: many_quotes(100_000),
    "10,000 parameters": lambda: many_parameters(10_000),
    "filename*N*= x10,000": lambda: filename_continuations(10_000),
    "sparse continuations": sparse_continuations,
    "boundary near-misses x1,000,000": lambda: boundary_near_misses(1_000_000),
    "boundary of 100 KB": lambda: long_boundary(100_000),
    "multipart without boundary": missing_boundary_parameter,
    "boundary never found": boundary_never_found,
    "no close delimiter": no_close_delimiter,
    "broken base64, 5 MB": lambda: broken_base64(5_000_000),
    "broken quoted-printable, 5 MB": lambda: broken_quoted_printable(5_000_000),
    "uuencoded attachment": uuencoded_attachment,
    "NULs, 1 MB": lambda: nuls(1_000_000),
    "8-bit garbage, 1 MB": lambda: eight_bit_garbage(1_000_000),
    "8-bit headers x1,000": lambda: eight_bit_headers(1_000),
    "bare CR lines x10,000": lambda: bare_cr_lines(10_000),
    "mixed line ends": mixed_line_ends,
    "HTML <script> x200,000": lambda: html_script_openings(200_000),
    "HTML unclosed tags x200,000": lambda: html_unclosed_tags(200_000),
    "encoded words x20,000": lambda: many_encoded_words(20_000),
    "hostile charsets": bad_charsets,
    "duplicate Content-* headers": duplicate_headers,
    "empty": empty,
    "headers only": headers_only,
    "body only": body_only,
}


def main(directory: str) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for index, (name, build) in enumerate(CASES.items()):
        (out / f"{index:02d}.eml").write_bytes(build())
        print(f"{index:02d}.eml  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
