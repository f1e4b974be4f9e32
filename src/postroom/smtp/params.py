"""MAIL and RCPT parameters: the ESMTP keywords Postroom knows, parsed into frozen values.

`parse_mail_params` and `parse_rcpt_params` take the text after the path (`SIZE=1000 BODY=8BITMIME`) and
return `MailParams` / `RcptParams`, or raise `ParameterError` carrying the catalogue reply to send:
555 5.5.4 for a keyword Postroom does not know, 501 5.5.4 for a known keyword with a bad or repeated
value. Known on MAIL: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID
(RFC 3461), AUTH (RFC 4954); on RCPT: NOTIFY and ORCPT (RFC 3461). DSN and AUTH values are carried for
the application, not acted on here.

Security: the input is a command line from the network, already bounded by `max_command_line` and free
of CR, LF and NUL. Values are checked against the grammar of their keyword; SIZE is bounded to 20 digits
so it cannot become a huge integer; ENVID and ORCPT are bounded as RFC 3461 asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from postroom.model import replies
from postroom.model.replies import Reply

BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
DsnReturn = Literal["FULL", "HDRS"]

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SIZE = re.compile(r"[0-9]{1,20}")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAX_ENVID = 100  # RFC 3461 §4.4
_MAX_ORCPT = 500  # RFC 3461 §4.2: the decoded address is at most 500 characters


class ParameterError(ValueError):
    """A MAIL or RCPT parameter the server refuses; `reply` is what the client is told."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailParams:
    """The ESMTP parameters of one MAIL command; `None` or `False` when the client did not give one."""

    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: DsnReturn | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    """The ESMTP parameters of one RCPT command: NOTIFY keywords (upper case) and ORCPT as written."""

    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


def _split(text: str) -> dict[str, str | None]:
    """`KEY[=VALUE]` words into a dict of upper-cased keywords; a repeated keyword is an error."""
    found: dict[str, str | None] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (sep and not value):
            raise ParameterError(replies.ARGUMENT_ERROR)
        key = key.upper()
        if key in found:
            raise ParameterError(replies.ARGUMENT_ERROR)
        found[key] = value if sep else None
    return found


def _required(value: str | None) -> str:
    if value is None:
        raise ParameterError(replies.ARGUMENT_ERROR)
    return value


def parse_mail_params(text: str) -> MailParams:
    """Parse the parameters of MAIL FROM. Raises `ParameterError` (555 unknown, 501 bad value)."""
    size: int | None = None
    body: BodyType | None = None
    smtputf8 = False
    ret: DsnReturn | None = None
    envid: str | None = None
    auth: str | None = None
    for key, value in _split(text).items():
        if key == "SIZE":
            digits = _required(value)
            if not _SIZE.fullmatch(digits):
                raise ParameterError(replies.ARGUMENT_ERROR)
            size = int(digits)
        elif key == "BODY":
            kind = _required(value).upper()
            if kind == "7BIT":
                body = "7BIT"
            elif kind == "8BITMIME":
                body = "8BITMIME"
            elif kind == "BINARYMIME":
                body = "BINARYMIME"
            else:
                raise ParameterError(replies.ARGUMENT_ERROR)
        elif key == "SMTPUTF8":
            if value is not None:
                raise ParameterError(replies.ARGUMENT_ERROR)
            smtputf8 = True
        elif key == "RET":
            kind = _required(value).upper()
            if kind == "FULL":
                ret = "FULL"
            elif kind == "HDRS":
                ret = "HDRS"
            else:
                raise ParameterError(replies.ARGUMENT_ERROR)
        elif key == "ENVID":
            envid = _required(value)
            if len(envid) > _MAX_ENVID or not _XTEXT.fullmatch(envid):
                raise ParameterError(replies.ARGUMENT_ERROR)
        elif key == "AUTH":
            auth = _required(value)
        else:
            raise ParameterError(replies.PARAMETER_NOT_RECOGNIZED)
    return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth)


def parse_rcpt_params(text: str) -> RcptParams:
    """Parse the parameters of RCPT TO. Raises `ParameterError` (555 unknown, 501 bad value)."""
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key, value in _split(text).items():
        if key == "NOTIFY":
            words = tuple(word.upper() for word in _required(value).split(","))
            never = words == ("NEVER",)
            if not never and (not set(words) <= _NOTIFY_VALUES or len(set(words)) != len(words)):
                raise ParameterError(replies.ARGUMENT_ERROR)
            notify = words
        elif key == "ORCPT":
            orcpt = _required(value)
            address_type, sep, address = orcpt.partition(";")
            if not sep or not _KEYWORD.fullmatch(address_type) or not address or len(orcpt) > _MAX_ORCPT:
                raise ParameterError(replies.ARGUMENT_ERROR)
        else:
            raise ParameterError(replies.PARAMETER_NOT_RECOGNIZED)
    return RcptParams(notify=notify, orcpt=orcpt)
