"""The migration batch (CSV) as an admin writes it: the exact headers, the service's bounds, the rows
that fail alone and the files that fail the whole batch (with the column and the fix named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.migration import MAX_BYTES, MAX_ROWS, BatchError, parse_batch, read_batch


def test_rows_in_any_column_order_keep_the_username_as_written() -> None:
    rows = parse_batch(
        "Password,EmailAddress,UserName\r\n"
        "s3cret,alice@contoso.test,alice*admin\r\n"
        '"pa,ss ""q""",bob@contoso.test,bob\r\n'
        "\r\n"
    )
    assert [(r.line, r.email_address, r.user_name, r.password, r.problem) for r in rows] == [
        (2, "alice@contoso.test", "alice*admin", "s3cret", ""),
        (3, "bob@contoso.test", "bob", 'pa,ss "q"', ""),
    ]


def test_a_password_never_shows_in_a_row_repr() -> None:
    (row,) = parse_batch("EmailAddress,UserName,Password\na@b.test,a,hunter2\n")
    assert "hunter2" not in repr(row)


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("EmailAddress,UserName", "lacks the column(s) Password"),
        ("Email Address,UserName,Password", "write it 'EmailAddress'"),
        ("emailaddress,UserName,Password", "write it 'EmailAddress'"),
        ("EmailAddress,UserName,Password,Comment", "unknown column 'Comment'"),
        ("EmailAddress,UserName,Password,Password", "named twice"),
    ],
)
def test_a_wrong_header_fails_the_batch_naming_the_column(header: str, named: str) -> None:
    with pytest.raises(BatchError, match="first line") as refused:
        parse_batch(f"{header}\na@b.test,a,p\n")
    assert named in str(refused.value)


def test_an_empty_file_fails_the_batch() -> None:
    with pytest.raises(BatchError, match="is empty"):
        parse_batch("")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("a@b.test,,p", "leaves UserName empty"),
        ("a@b.test,a", "leaves Password empty"),
        ("a@b.test,a,p,,extra", "has 5 values for 4 columns"),
        ("a@b.test,a,p,/shared", "sets UserRoot"),
    ],
)
def test_a_bad_row_fails_alone(line: str, problem: str) -> None:
    rows = parse_batch(f"EmailAddress,UserName,Password,UserRoot\nok@b.test,ok,p,\n{line}\n")
    assert rows[0].problem == ""
    assert problem in rows[1].problem


def test_more_than_the_row_limit_fails_the_batch() -> None:
    text = "EmailAddress,UserName,Password\n" + "a@b.test,a,p\n" * (MAX_ROWS + 1)
    with pytest.raises(BatchError, match="more than 50,000 rows"):
        parse_batch(text)


def test_a_file_over_10_mb_or_not_utf8_fails_the_batch(tmp_path: Path) -> None:
    large = tmp_path / "large.csv"
    large.write_bytes(b"EmailAddress,UserName,Password\n" + b"x" * MAX_BYTES)
    with pytest.raises(BatchError, match="larger than 10 MB"):
        read_batch(large)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("EmailAddress,UserName,Password\nj\xf6rg@b.test,j\xf6rg,p\n".encode("latin-1"))
    with pytest.raises(BatchError, match="not UTF-8"):
        read_batch(latin)


def test_utf8_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("EmailAddress,UserName,Password\njörg@b.test,jörg,pässword\n".encode("utf-8-sig"))
    (row,) = read_batch(path)
    assert (row.email_address, row.user_name, row.password) == ("jörg@b.test", "jörg", "pässword")
