"""The migration batch: the CSV file that names each mailbox to move (spec §2, "IMAP migration").

The header row must name exactly the columns `EmailAddress` (the Postroom mailbox, which must exist),
`UserName` and `Password` (the login on the source server), in any order, spelled exactly (no
spaces, case kept). `UserRoot` (Exchange's virtual shared folders) may be there but is not supported:
a row that fills it fails with a message, the others go on. Any other column, or a missing one,
fails the whole batch before anything is copied, naming the column and the fix. A `UserName` is
passed through as written, so a Dovecot master login (`user*admin`) works.

Bounds (the service's): at most `MAX_ROWS` rows and `MAX_BYTES` octets; UTF-8 (a byte order mark is
allowed). A file past a bound, or not UTF-8, fails the batch. A row with a missing value (or more values than
columns) fails only that row.

*Security:* the file holds passwords. They are kept only in the `BatchRow`s of this run (never in
a `repr`, a log or the report) and never written anywhere.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED = ("EmailAddress", "UserName", "Password")
OPTIONAL = ("UserRoot",)
MAX_ROWS = 50_000
MAX_BYTES = 10 * 1024 * 1024


class BatchError(ValueError):
    """The CSV file as a whole is refused; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    line: int  # the row's line in the file (the header is line 1), for the report
    email_address: str
    user_name: str
    password: str = field(repr=False)
    user_root: str = ""
    problem: str = ""  # set: this row fails with this message and is not migrated


def read_batch(path: Path) -> list[BatchRow]:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise BatchError(f"cannot read {path}: {error.strerror}; check the path given with --csv") from None
    if len(data) > MAX_BYTES:
        raise BatchError(
            f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MB; split it into several batches"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BatchError(
            f"{path} is not UTF-8 (octet {error.start}); save it as UTF-8 (CSV UTF-8 in a spreadsheet)"
        ) from None
    return parse_batch(text, str(path))


def parse_batch(text: str, name: str = "the CSV file") -> list[BatchRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise BatchError(f"{name} is empty; its first line must be {','.join(REQUIRED)}") from None
    except csv.Error as error:
        raise BatchError(
            f"{name} line 1 is not CSV ({error}); its first line must be {','.join(REQUIRED)}"
        ) from None
    _check_header(header, name)
    column = {title: index for index, title in enumerate(header)}
    rows: list[BatchRow] = []
    try:
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # a blank line (often the last) is no mailbox
            if len(rows) == MAX_ROWS:
                raise BatchError(f"{name} has more than {MAX_ROWS:,} rows; split it into several batches")
            rows.append(_row(reader.line_num, values, column, len(header)))
    except csv.Error as error:
        raise BatchError(
            f"{name} line {reader.line_num} is not CSV ({error}); fix the quoting there"
        ) from None
    return rows


def _check_header(header: list[str], name: str) -> None:
    wanted = ",".join(REQUIRED)
    for title in header:
        if title not in REQUIRED + OPTIONAL:
            near = next(
                (known for known in REQUIRED + OPTIONAL if _squeezed(known) == _squeezed(title)), None
            )
            hint = f"write it {near!r}" if near else f"the columns are {wanted} (and optionally UserRoot)"
            raise BatchError(f"{name}: unknown column {title!r} in the first line; {hint}")
    if len(set(header)) != len(header):
        raise BatchError(f"{name}: a column is named twice in the first line; it must be {wanted}")
    missing = [title for title in REQUIRED if title not in header]
    if missing:
        raise BatchError(
            f"{name}: the first line lacks the column(s) {', '.join(missing)}; it must be {wanted} "
            "(names exact, no spaces)"
        )


def _squeezed(title: str) -> str:
    return "".join(title.split()).lower()


def _row(line: int, values: list[str], column: dict[str, int], width: int) -> BatchRow:
    def value(title: str) -> str:
        index = column.get(title)
        return values[index].strip() if index is not None and index < len(values) else ""

    row = BatchRow(
        line=line,
        email_address=value("EmailAddress"),
        user_name=value("UserName"),
        password=values[column["Password"]] if column["Password"] < len(values) else "",
        user_root=value("UserRoot"),
    )
    problem = ""
    if len(values) > width:
        problem = f"line {line} has {len(values)} values for {width} columns; fix the row's quoting"
    elif not row.email_address or not row.user_name or not row.password:
        empty = [title for title in REQUIRED if not (value(title) if title != "Password" else row.password)]
        problem = f"line {line} leaves {', '.join(empty)} empty; fill it in"
    elif row.user_root:
        problem = (
            f"line {line} sets UserRoot (virtual shared folders), which Postroom does not migrate; "
            "leave it empty to copy the user's own folders"
        )
    if problem:
        return BatchRow(line, row.email_address, row.user_name, row.password, row.user_root, problem)
    return row
