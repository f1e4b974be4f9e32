"""The common attachment filter: true types, the extension fallback, inside ZIP archives, and what it
cannot look into (encrypted members, bombs, too many members, too deep)."""

from __future__ import annotations

import time

import pytest

from postroom.model.policy import COMMON_ATTACHMENT_TYPES
from postroom.model.verdicts import MalwareResult, MalwareVerdict
from postroom.protection.malware import ArchiveLimits, attachment_filter
from postroom.protection.mime import parse_message
from tests.support import hostile_mime
from tests.support import malware_samples as s

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def check(message: bytes, types: tuple[str, ...] = COMMON_ATTACHMENT_TYPES, **limits: int) -> MalwareVerdict:
    return attachment_filter(parse_message(message), types, ArchiveLimits(**limits))


def blocked(verdict: MalwareVerdict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    assert verdict.result is MalwareResult.BLOCKED_FILE_TYPE, verdict
    assert verdict.engine == "attachment-filter"
    return verdict.names, verdict.files


FILES = {
    # True type by magic, whatever the name says.
    "exe renamed .txt": (("readme.txt", s.pe()), ("exe",), ("readme.txt",)),
    "dll renamed .dat": (("x.dat", s.pe(dll=True)), ("dll",), ("x.dat",)),
    "elf renamed .jpg": (("photo.jpg", s.ELF), ("elf",), ("photo.jpg",)),
    "mach-o without a name": (("tool", s.MACHO), ("macho",), ("tool",)),
    "msi renamed .doc": (("letter.doc", s.MSI), ("msi",), ("letter.doc",)),
    "shortcut renamed .pdf": (("scan.pdf", s.LNK), ("lnk",), ("scan.pdf",)),
    "cabinet": (("data.bin", s.CAB), ("cab",), ("data.bin",)),
    "disk image renamed .pdf": (("scan.pdf", s.ISO), ("iso",), ("scan.pdf",)),
    "registry file renamed .txt": (("settings.txt", s.REG), ("reg",), ("settings.txt",)),
    "HTML application renamed .html": (("page.html", s.HTA), ("hta",), ("page.html",)),
    "macro document renamed .docx": (("report.docx", s.office(macros=True)), ("docm",), ("report.docx",)),
    "java archive renamed .zip": (("tool.zip", s.JAR), ("jar",), ("tool.zip",)),
    "android package": (("app.apk", s.APK), ("apk",), ("app.apk",)),
    # The extension, when the octets say nothing (or say something else).
    ".exe with text content": (("setup.exe", b"just text\r\n"), ("exe",), ("setup.exe",)),
    ".vbs script": (("run.vbs", b'MsgBox "hi"\r\n'), ("vbs",), ("run.vbs",)),
    ".exe. with a trailing dot": (("setup.exe.", b"text"), ("exe",), ("setup.exe.",)),
    # Inside ZIP archives.
    "zip>exe": (
        ("invoice.zip", s.zip_of(("invoice.pdf.exe", s.pe()), ("notes.txt", b"hi"))),
        ("zip>exe",),
        ("invoice.zip>invoice.pdf.exe",),
    ),
    "zip>exe renamed .txt": (
        ("a.zip", s.zip_of(("readme.txt", s.pe()))),
        ("zip>exe",),
        ("a.zip>readme.txt",),
    ),
    "zip>macro document": (
        ("d.zip", s.zip_of(("q.docx", s.office(macros=True)))),
        ("zip>docm",),
        ("d.zip>q.docx",),
    ),
    "zip>app bundle": (
        ("t.zip", s.zip_of(("Tool.app/Contents/Info.plist", b"<plist/>"))),
        ("zip>app",),
        ("t.zip>Tool.app/Contents/Info.plist",),
    ),
    "zip in zip in zip>exe": (("n.zip", s.nested_zip(3, ("x.exe", s.pe()))), ("zip>zip>zip>exe",), None),
    # A ZIP archive behind other octets (a self-extractor's trick, or junk to hide it) is opened too.
    "zip behind junk": (
        ("photo.jpg", b"\xff\xd8junk" * 100 + s.zip_of(("x.scr", b"MZ"))),
        ("zip>scr",),
        None,
    ),
}


@pytest.mark.parametrize("case", FILES)
def test_blocked_types_are_found_by_true_type_extension_and_inside_archives(case: str) -> None:
    file, names, files = FILES[case]
    found_names, found_files = blocked(check(s.with_attachments(file)))
    assert found_names == names
    if files is not None:
        assert found_files == files


@pytest.mark.parametrize("case", s.EVASIONS)
def test_a_zip_behind_broken_mime_is_still_opened(case: str) -> None:
    names, _ = blocked(check(s.EVASIONS[case]))
    assert names == ("zip>com",)


CLEAN = {
    "a PDF and a document": (("report.pdf", PDF), ("report.docx", s.office(macros=False))),
    "an old Word document": (("letter.doc", s.DOC),),
    "a ZIP of ordinary files": (("photos.zip", s.zip_of(("a.pdf", PDF), ("b.txt", b"MZ is a town"))),),
    "text that starts like a DOS header": (("notes.txt", b"MZ Holdings annual report\r\n" * 20),),
}


@pytest.mark.parametrize("case", CLEAN)
def test_ordinary_attachments_pass(case: str) -> None:
    verdict = check(s.with_attachments(*CLEAN[case]))
    assert verdict.result is MalwareResult.CLEAN, verdict


def test_a_message_body_is_checked_for_binaries_but_not_for_script_words() -> None:
    assert (
        check(s.plain(b"<hta:application> is how an HTA starts; regedit4 too")).result is MalwareResult.CLEAN
    )
    body = s.HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    names, _ = blocked(check(body + s.base64.b64encode(s.pe())))
    assert names == ("exe",)


def test_the_policys_list_decides() -> None:
    message = s.with_attachments(("report.pdf", PDF), ("x.exe", s.pe()))
    assert blocked(check(message, ("pdf",))) == (("pdf",), ("report.pdf",))
    assert check(message, ()).result is MalwareResult.CLEAN


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        (
            b"Content-Type: application/x; name=shown.txt\r\n"
            b"Content-Disposition: attachment; filename=real.exe",
            "exe",
        ),
        (b"Content-Disposition: attachment; filename=a.txt; filename*=utf-8''b.scr", "scr"),
        (b"Content-Disposition: attachment; filename*=utf-8''run.bat%00.txt", "bat"),
        (b'Content-Type: application/x; name="=?utf-8?Q?setup=2Eexe?="', "exe"),
    ],
)
def test_every_name_a_part_declares_is_checked(fields: bytes, name: str) -> None:
    names, _ = blocked(check(s.HEAD + fields + b"\r\n\r\ntext"))
    assert names == (name,)


def test_archives_are_opened_to_the_depth_limit_and_no_further() -> None:
    assert blocked(check(s.with_attachments(("n.zip", s.nested_zip(2, ("x.exe", s.pe())))), max_depth=2))[
        0
    ] == ("zip>zip>exe",)
    names, files = blocked(
        check(s.with_attachments(("n.zip", s.nested_zip(3, ("x.txt", b"hi")))), max_depth=2)
    )
    assert names == ("zip>zip>zip>too-deep",)
    assert files == ("n.zip>level2.zip>level1.zip",)


def test_too_many_members() -> None:
    archive = s.zip_of(*((f"f{i}.txt", b"x") for i in range(60)))
    assert check(s.with_attachments(("many.zip", archive)), max_members=60).result is MalwareResult.CLEAN
    assert blocked(check(s.with_attachments(("many.zip", archive)), max_members=59)) == (
        ("zip>too-many-members",),
        ("many.zip",),
    )


def test_all_the_archives_of_a_message_share_the_member_limit() -> None:
    archive = s.zip_of(*((f"f{i}.txt", b"x") for i in range(40)))
    message = s.with_attachments(*((f"a{i}.zip", archive) for i in range(4)))
    names, files = blocked(check(message, max_members=50, max_depth=3))  # 150 for the message
    assert names == ("zip>too-many-members",)
    assert files == ("a3.zip",)


def test_a_zip_bomb_is_a_finding_and_is_not_read() -> None:
    bomb = s.zip_bomb(32 << 20)  # 32 MiB of zeros in ~32 KB
    assert len(bomb) < 100_000
    started = time.perf_counter()
    names, files = blocked(check(s.with_attachments(("bomb.zip", bomb)), max_octets=4 << 20))
    assert time.perf_counter() - started < 0.5  # inflating 32 MiB would take longer than this
    assert (names, files) == (("zip>bomb",), ("bomb.zip",))


def test_nested_bombs_stop_at_the_budget_of_the_message() -> None:
    layer = s.zip_bomb(6 << 20)  # each 6 MiB unpacked
    bomb = s.zip_of(*((f"layer{i}.zip", layer) for i in range(8)))
    names, files = blocked(check(s.with_attachments(("42.zip", bomb)), max_octets=16 << 20))
    assert names == ("zip>zip>bomb",)
    # Layers 0 and 1 fit in the 16 MiB budget; from layer 2 on, none is opened.
    assert files == tuple(f"42.zip>layer{i}.zip" for i in range(2, 8))


def test_a_member_that_lies_about_its_size_is_not_read_past_it() -> None:
    liar = s.lying_zip(declared=100, actual=bytes(8 << 20))
    names, _ = blocked(check(s.with_attachments(("liar.zip", liar))))
    assert names == ("zip>unreadable",)  # its CRC fails at the declared end


def test_an_encrypted_archive_is_a_finding_and_its_names_are_still_checked() -> None:
    archive = s.encrypted_zip(("statement.pdf", PDF))
    assert blocked(check(s.with_attachments(("locked.zip", archive)))) == (
        ("zip>encrypted",),
        ("locked.zip",),
    )
    archive = s.encrypted_zip(("statement.pdf.exe", s.pe()))
    names, _ = blocked(check(s.with_attachments(("locked.zip", archive))))
    assert names == ("zip>encrypted", "zip>exe")


def test_a_corrupt_archive_is_a_finding() -> None:
    names, _ = blocked(check(s.with_attachments(("broken.zip", b"PK\x03\x04" + b"\x00" * 200))))
    assert names == ("zip>unreadable",)


def test_a_message_cut_at_the_mime_limits_is_a_finding() -> None:
    verdict = check(hostile_mime.many_parts(600))
    assert blocked(verdict)[0] == ("mime-limits",)
