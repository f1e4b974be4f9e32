"""SASL for SMTP AUTH (RFC 4954): which listeners offer it, and the PLAIN and LOGIN responses decoded.

`AuthPolicy` is what a listener offers: the mechanisms, whether TLS must be active first (RFC 4954 §4:
plaintext passwords only under TLS) and whether MAIL needs a completed AUTH. The decoders turn one
client response line into octets and the octets into `SaslCredentials`; they do no I/O and are used by
the protocol core (`smtp.protocol`).

Guarantees. A response is strict base64 (RFC 4648 alphabet and padding, nothing else; `=` alone is
the empty initial response of RFC 4954 §4); the decoded octets must be UTF-8 (RFC 4616 §2). A PLAIN
message is `[authzid] NUL authcid NUL passwd` with exactly two NULs and a non-empty authcid and
password (RFC 4616 §2); a LOGIN user name or password holds no NUL and is not empty. Every decoder
returns None for input that breaks a rule: the core answers it with 501 5.5.2.

Failure behaviour: no exceptions for any input; `AuthPolicy` raises ValueError for an unknown or empty
mechanism list (a configuration mistake).

Security: the input is the client's and carries a password. Nothing here logs, and the password lives
only in `SaslCredentials.password`, which its repr leaves out. NUL tricks (`user\\0admin\\0pw`, a NUL
in a LOGIN name, a PLAIN message with three NULs) are refused, never truncated or guessed at.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from postroom.smtp.session import SaslCredentials

SUPPORTED_MECHANISMS = ("PLAIN", "LOGIN")

# The two fixed challenges of LOGIN: "Username:" and "Password:" in base64 (the de-facto LOGIN draft).
LOGIN_USERNAME_CHALLENGE = "VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """SMTP AUTH on one listener. `None` in its place means the listener offers no AUTH (the MX role).

    `tls_required`: AUTH is neither advertised nor accepted before TLS is active (530 5.7.0).
    `required_for_mail`: MAIL before a successful AUTH gets 530 5.7.57.
    `mechanisms`: advertised in this order, a subset of PLAIN and LOGIN."""

    tls_required: bool = True
    required_for_mail: bool = True
    mechanisms: tuple[str, ...] = SUPPORTED_MECHANISMS

    def __post_init__(self) -> None:
        unknown = [name for name in self.mechanisms if name not in SUPPORTED_MECHANISMS]
        if unknown or not self.mechanisms:
            supported = ", ".join(SUPPORTED_MECHANISMS)
            raise ValueError(
                f"SMTP AUTH mechanisms {list(self.mechanisms)!r}: use one or more of {supported}"
            )

    def offers(self, mechanism: str) -> bool:
        return mechanism in self.mechanisms


def decode_response(raw: bytes, *, initial: bool = False) -> bytes | None:
    """The octets of one base64 response; None when it is not strict base64.

    With `initial`, `=` stands for an empty initial response (RFC 4954 §4); a continuation line is
    empty for an empty response."""
    if initial and raw == b"=":
        return b""
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        return None


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def plain_credentials(data: bytes) -> SaslCredentials | None:
    """Credentials from a PLAIN message (RFC 4616 §2), or None when it is malformed."""
    text = _text(data)
    if text is None:
        return None
    fields = text.split("\x00")
    if len(fields) != 3:
        return None
    authzid, authcid, password = fields
    if not authcid or not password:
        return None
    return SaslCredentials(mechanism="PLAIN", authzid=authzid, authcid=authcid, password=password)


def login_field(data: bytes) -> str | None:
    """A LOGIN user name or password, or None when it is empty, not UTF-8 or holds a NUL."""
    text = _text(data)
    if not text or "\x00" in text:
        return None
    return text
