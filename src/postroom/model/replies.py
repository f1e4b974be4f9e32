"""SMTP replies and the catalogue every room answers from.

A `Reply` is a basic code, an RFC 3463 enhanced status code and text. Rooms never write reply
prose inline: they name an entry of this catalogue (or `Reply.with_text` on one) so the codes are in
one place and tests can assert on them. Values follow the reference in `shared/spec` §12.2, under
Postroom's own words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: `code` (e.g. 550), `enhanced` (e.g. "5.7.1") and the text lines."""

    code: int
    enhanced: str | None
    text: str

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str) -> Reply:
        return replace(self, text=text)

    def lines(self) -> list[str]:
        """The reply as SMTP lines without CRLF (`250-...` continuation, `250 ...` last)."""
        parts = self.text.split("\n") or [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = []
        for index, part in enumerate(parts):
            sep = " " if index == len(parts) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{part}".rstrip())
        return out

    def to_bytes(self) -> bytes:
        return "".join(line + "\r\n" for line in self.lines()).encode("utf-8")

    def __str__(self) -> str:
        return " / ".join(self.lines())


# --- positive -------------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.6.0", "Queued as {id}")
RESET = Reply(250, "2.0.0", "Reset state")
NOOP = Reply(250, "2.0.0", "OK")
START_DATA = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
CLOSING = Reply(221, "2.0.0", "Service closing transmission channel")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS")

# --- temporary ------------------------------------------------------------------------------------
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_CONNECTIONS_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later")
TOO_MANY_CONNECTIONS_FROM_NETWORK = Reply(
    421, "4.7.0", "Too many connections from your network, try again later"
)
SESSION_TIME_EXCEEDED = Reply(421, "4.4.2", "Session time exceeded, closing connection")
DATA_RATE_TOO_LOW = Reply(421, "4.4.2", "Data rate too low, closing connection")
TOO_MANY_REFUSED_RECIPIENTS = Reply(421, "4.7.0", "Too many refused recipients, closing connection")
TOO_MANY_JUNK_COMMANDS = Reply(421, "4.7.0", "Too many commands without mail, closing connection")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
STORAGE_UNAVAILABLE = Reply(421, "4.3.0", "Mail storage unavailable, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Temporary local problem, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
DIRECTORY_UNAVAILABLE = Reply(451, "4.4.3", "Directory lookup failed, try again later")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")

# --- permanent: syntax and sequence ---------------------------------------------------------------
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_LF_COMMAND = Reply(500, "5.5.2", "Command lines must end with <CRLF>")
# A PROXY protocol header from a peer that is not a trusted balancer: to SMTP it is a command that is
# not one (500), and 5.5.1 (RFC 3463: invalid command) says so without claiming a policy decision about
# the client (5.7.x), whose address the server never learned. The connection is closed after it.
PROXY_NOT_ACCEPTED = Reply(500, "5.5.1", "PROXY protocol is not accepted from this address")
ARGUMENT_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
HELO_FIRST = Reply(503, "5.5.1", "Send EHLO or HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
PARAMETER_NOT_RECOGNIZED = Reply(555, "5.5.4", "MAIL/RCPT parameter not recognized or not implemented")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Address requires SMTPUTF8; declare it with MAIL FROM ... SMTPUTF8")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
MUST_ISSUE_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# --- permanent: content ---------------------------------------------------------------------------
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
DATA_LINE_TOO_LONG = Reply(550, "5.6.0", "Message has a line longer than the maximum line length")
NUL_IN_DATA = Reply(550, "5.6.0", "Message contains NUL octets")
BARE_LF_DATA = Reply(550, "5.6.11", "Message contains bare LF or bare CR; lines must end with <CRLF>")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section exceeds the maximum header size")
HOP_COUNT_EXCEEDED = Reply(554, "5.4.14", "Hop count exceeded - possible mail loop")

# --- permanent: policy ----------------------------------------------------------------------------
UNABLE_TO_RELAY = Reply(550, "5.7.1", "Unable to relay")
RECIPIENT_ACCESS_DENIED = Reply(550, "5.4.1", "Recipient address rejected: Access denied")
RECIPIENT_NOT_FOUND = Reply(550, "5.1.10", "Recipient not found")
SENDER_DENIED = Reply(550, "5.1.0", "Sender denied")
GROUP_MEMBER_NOT_FOUND = Reply(550, "5.1.1", "Recipient not found")  # a group member in one of our domains
GROUP_SENDER_NOT_AUTHENTICATED = Reply(
    550, "5.7.133", "Sender not authenticated for group; it accepts mail only from inside its organization"
)
TOO_MANY_EXPANDED_RECIPIENTS = Reply(550, "5.5.3", "Too many recipients after group expansion")
POSTMASTER_NOT_CONFIGURED = Reply(451, "4.3.5", "Postmaster is not configured here, try again later")

# --- added by the smtp room: greeting, hello and chunk replies (placeholders filled by the server) ---
GREETING = Reply(220, None, "{hostname} ESMTP Postroom")
HELLO = Reply(250, None, "{hostname}")
CHUNK_RECEIVED = Reply(250, "2.0.0", "{size} octets received")
LOCAL_ERROR_CLOSING = Reply(421, "4.3.0", "Temporary local problem, closing connection")

# --- SMTP AUTH and submission (RFC 4954; spec §5, §10.5, §13) --------------------------------------
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
AUTH_CHALLENGE = Reply(334, None, "{challenge}")  # base64 challenge of a SASL exchange
AUTH_FAILED = Reply(535, "5.7.8", "Authentication unsuccessful: the user name or password is not right")
AUTH_THROTTLED = Reply(454, "4.7.0", "Temporary authentication failure: too many failed logins, try later")
AUTH_TOO_MANY_FAILURES = Reply(421, "4.7.0", "Too many failed logins, closing connection")
AUTH_DISABLED = Reply(535, "5.7.139", "Authentication unsuccessful: SMTP AUTH is disabled for this account")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Cannot decode the authentication response")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_UNSUPPORTED_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
AUTH_REQUIRED = Reply(530, "5.7.57", "Client not authenticated to send mail")
SEND_AS_DENIED = Reply(550, "5.7.60", "Client does not have permissions to send as this sender")
MESSAGE_RATE_EXCEEDED = Reply(
    450, "4.7.0", "Message submission rate for this client has exceeded the configured limit, try later"
)
DAILY_RECIPIENT_LIMIT = Reply(
    550, "5.1.90", "Your message can't be sent: you have reached your daily recipient limit"
)
SUBMISSION_QUOTA_EXCEEDED = Reply(
    550,
    "5.2.2",
    "Submission quota exceeded: the sender is restricted from sending until an administrator releases it",
)
SENDER_SIZE_EXCEEDED = Reply(552, "5.2.3", "Message size exceeds the sender's send limit")
RECIPIENT_SIZE_EXCEEDED = Reply(552, "5.2.3", "Message size exceeds the recipient's receive limit")
# RFC 3463 X.2.2 "mailbox full", refused at RCPT so the sending server reports it (Postroom writes no
# bounce). The spec's §12.2 row for 5.2.2 is Exchange's submission quota (SUBMISSION_QUOTA_EXCEEDED).
MAILBOX_FULL = Reply(552, "5.2.2", "Mailbox full: the recipient's mailbox is full")

# --- outbound delivery and DSNs (spec §12.2, RFC 3463) ---------------------------------------------
# Never sent as an SMTP reply: it is the final status of an expired recipient in trace and DSNs, where
# the spec's NDR gives it with a permanent basic code (the failure is final; 4.4.7 says why).
MESSAGE_EXPIRED = Reply(550, "4.4.7", "QUEUE.Expired; message expired")
NULL_MX = Reply(556, "5.1.10", "Recipient domain does not accept mail (null MX, RFC 7505)")
NO_MAIL_HOST = Reply(451, "4.4.4", "Unable to route: no mail host found for the recipient domain")
DNS_TEMPORARY = Reply(451, "4.4.3", "Unable to route: DNS lookup failed, will retry")
CONNECT_FAILED = Reply(451, "4.4.1", "Connection to the remote server failed, will retry")
REMOTE_TIMEOUT = Reply(451, "4.4.2", "The remote server did not answer in time, will retry")
TLS_POLICY_FAILED = Reply(451, "4.7.5", "TLS required by the destination's policy could not be established")
DANE_FAILED = Reply(451, "4.7.323", "DANE: no certificate matched the destination's TLSA records")
EIGHT_BIT_REFUSED = Reply(
    554, "5.6.7", "The destination cannot receive 8-bit or UTF-8 mail and it cannot be converted"
)
ROUTING_LOOP = Reply(554, "5.4.14", "Hop count exceeded - possible mail loop")

# --- connectors (spec §3.6) ---------------------------------------------------------------------
# At RCPT: relaying from an on-premises source, and a partner connector's restrictions.
RELAY_ACCESS_DENIED_ATTR = Reply(550, "5.7.64", "Relay Access Denied ATTR36")
TENANT_ATTRIBUTION_DENIED = Reply(550, "5.7.64", "TenantAttribution; Relay Access Denied")
PARTNER_RESTRICTED = Reply(
    550,
    "5.7.51",
    "TenantInboundAttribution; the message does not meet the security restrictions of the recipient "
    "organization's partner connector",
)
CONNECTOR_TLS_REQUIRED = Reply(
    451, "4.7.321", "TenantInboundAttribution; the recipient organization's connector requires TLS"
)
# Delivery over an outbound connector: retried for `[queue] connector_expiration` (24 h), then an NDR.
CONNECTOR_DNS_FAILED = Reply(450, "4.4.312", "DNS query failed for the connector's destination")
CONNECTOR_TIMEOUT = Reply(450, "4.4.315", "Connection to the connector's destination timed out")
CONNECTOR_REFUSED = Reply(450, "4.4.316", "Connection refused by the connector's destination")
CONNECTOR_CANNOT_CONNECT = Reply(
    450, "4.4.317", "Cannot connect to the connector's destination, or TLS is required and was not offered"
)
CONNECTOR_CLOSED = Reply(450, "4.4.318", "Connection closed abruptly by the connector's destination")
CONNECTOR_CERTIFICATE_FAILED = Reply(
    450, "4.7.320", "Certificate validation failed for the connector's destination"
)
SMART_HOST_IS_LOCAL = Reply(554, "5.4.14", "Routing loop: the connector's smart host is this service")
FORWARDING_DENIED = Reply(
    550, "5.7.520", "Access denied, your organization does not allow external forwarding"
)

# --- added by the smtp room for AUTH (RFC 4954) -----------------------------------------------------
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "Send EHLO first")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
AUTH_NOT_WAITED = Reply(503, "5.5.1", "Send the authentication response only after the 334 challenge")

# --- TLS policy failures (spec §12.3; delivery.tls_policy) -------------------------------------------
TLS_POLICY_RETRY_PERIOD = 86_400.0  # seconds: MTA-STS and DANE failures retry for 24 h, not the 2 days
_TLS_POLICY_CODES = frozenset(
    {
        TLS_POLICY_FAILED.enhanced,
        DANE_FAILED.enhanced,
        # Connector delivery failures (spec §3.6): queued and retried 24 h, then an NDR.
        CONNECTOR_DNS_FAILED.enhanced,
        CONNECTOR_TIMEOUT.enhanced,
        CONNECTOR_REFUSED.enhanced,
        CONNECTOR_CANNOT_CONNECT.enhanced,
        CONNECTOR_CLOSED.enhanced,
        CONNECTOR_CERTIFICATE_FAILED.enhanced,
    }
)


def retry_period(reply: Reply) -> float | None:
    """How long a recipient deferred with `reply` keeps retrying when that is not the queue's usual
    expiry: `TLS_POLICY_RETRY_PERIOD` for a TLS policy failure (4.7.5, 4.7.323) and for a connector
    delivery failure (4.4.312-318, 4.7.320), else None."""
    return TLS_POLICY_RETRY_PERIOD if reply.is_temporary and reply.enhanced in _TLS_POLICY_CODES else None


# --- queue control (issue 8: the queue room) ------------------------------------------------------
DELETED_BY_ADMINISTRATOR = Reply(550, "5.3.0", "Message deleted from the queue by an administrator")

# --- SRS bounces at RCPT (routing/srs.py) ----------------------------------------------------------
SRS_INVALID = Reply(550, "5.1.1", "Recipient address rejected: invalid or expired SRS address")
SRS_BOUNCES_ONLY = Reply(550, "5.7.1", "Recipient address rejected: an SRS address accepts only bounces")

# --- the outbound SMTP client (delivery.remote) ---------------------------------------------------
BAD_DESTINATION_SYSTEM = Reply(550, "5.1.2", "Bad destination system: the recipient domain does not exist")
NO_MAIL_HOST_ADDRESS = Reply(451, "4.4.4", "Unable to route: the mail hosts of the domain have no address")
MAIL_HOST_IS_LOCAL = Reply(554, "5.4.14", "Routing loop: the recipient domain's mail host is this service")
REMOTE_DISCONNECTED = Reply(451, "4.4.2", "The remote server closed the connection, will retry")
REMOTE_SIZE_EXCEEDED = Reply(552, "5.3.4", "The message is larger than the remote server accepts")
REMOTE_PROTOCOL_ERROR = Reply(451, "4.5.0", "The remote server answered out of protocol, will retry")

# --- the connection filter (protection.connection; spec §10.2, §12.2) ------------------------------
# Placeholders {ip} and {zone} are filled by the filter. Rate limits say 421: the session closes and a
# well-behaved sender retries later; blocks are permanent.
SERVICE_BLOCKED = Reply(
    554, "5.7.513", "Service unavailable, Client host [{ip}] blocked using the service block list"
)
CUSTOMER_BLOCKED = Reply(
    550, "5.7.513", "Service unavailable, Client host [{ip}] blocked using Customer Block list"
)
BLOCKLISTED = Reply(550, "5.7.1", "Service unavailable; client [{ip}] blocked using {zone}")
CONNECTION_RATE_EXCEEDED = Reply(
    421, "4.7.0", "Too many connections per minute from your address, try again later"
)
MESSAGE_RATE_FROM_CLIENT_EXCEEDED = Reply(
    421, "4.7.0", "Too many messages per minute from your address, try again later"
)
