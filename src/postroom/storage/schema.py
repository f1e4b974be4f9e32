"""The database schema: every table of every room, in one SQLAlchemy Core metadata.

One schema serves SQLite (the embedded default) and PostgreSQL (scale-out). Rooms own their tables
(directory: tenants, domains, DKIM keys, recipients, addresses, group members, sending settings,
send-as grants, sender counters and restrictions, remote domains, mailbox forwarding; mailstore:
folders, messages;
queue: spool messages and queue recipients; trace: trace messages, recipients and events; storage:
the database blob store's blobs and chunks; directory also protection policies and mailboxes' sender
lists; quarantine: quarantined messages and their recipients) but they
live in one metadata so a fresh database is created from it at once. `SCHEMA_VERSION` is recorded in
`schema_version`; a database newer than the code is refused, never written. Changing a table here
means bumping `SCHEMA_VERSION` and writing its upgrade step in `migrations.py`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)

# 2: dkim_keys; 3: ids never reused (SQLite AUTOINCREMENT), directory_changes, organization settings,
# group delivery restrictions, trace_recipients.resolved; 4: sending (submission settings, send-as,
# sender counters and restrictions, remote domains, forwarding, outbound queue columns, DKIM retirement);
# 5: scale-out (the node registry; the database blob store; indexes for trace search and the
# scheduler's turn at scale); 6: protection (policies, mailbox safe and blocked senders, quarantine);
# 7: connectors (inbound, outbound, validation history, a tenant's scenario); 8: the admin API's tokens;
# 9: mailbox access (folders' special use, subscription and modification sequence; messages' modseq
# and IMAP structure cache; a mailbox's quota; the migration's record of copied messages)
SCHEMA_VERSION = 9

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

# --- directory ------------------------------------------------------------------------------------
# Ids that key other rooms' rows (a tenant's trace and queue rows, a mailbox's folders, a folder's
# messages) are never reused: SQLite AUTOINCREMENT, PostgreSQL sequences. A new tenant can never
# inherit what a removed one left anywhere.
# One row: bumped by every directory change, so nodes caching the directory know to drop their cache.
directory_generation = Table(
    "directory_generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
)

# What each generation changed (domain names, address keys, group ids; "all" for a change too large
# to list), so a caching node drops only those entries. The directory keeps the newest generations.
directory_changes = Table(
    "directory_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("kind", String(10), nullable=False),  # domain | address | group | all
    Column("key", String(320), nullable=False, default=""),
    Index("ix_directory_changes_generation", "generation"),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)

domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False, unique=True),  # ASCII (A-label), lower case
    Column("type", String(20), nullable=False),  # authoritative | internal-relay
    Column("status", String(20), nullable=False),  # pending | verified
    Column("is_default", Boolean, nullable=False, default=False),
    Column("verification_token", String(64), nullable=False),
    Column("domain_key", String(63), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("verified_at", Float),
    sqlite_autoincrement=True,
)

domain_history = Table(
    "domain_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("event", String(40), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

# DKIM key pairs: two selectors per domain, one active (signs), the other ready for rotation.
dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("selector", String(63), nullable=False),
    Column("private_key", Text, nullable=False),  # PKCS#8 PEM
    Column("public_key", Text, nullable=False),  # base64 DER SubjectPublicKeyInfo: the p= tag
    Column("active", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("domain_id", "selector"),
    # Last: added by schema step 4. Set while the selector holds the key a rotation retired (kept
    # published for mail in flight, then renewed).
    Column("retired_at", Float),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),  # mailbox | group | contact
    Column("display_name", String(256), nullable=False, default=""),
    Column("external_address", String(320)),  # contacts: where mail for them goes
    Column("password_hash", String(200)),
    Column("created_at", Float, nullable=False),
    # Last: added for issue 12 (mailbox access), appended so an upgraded table equals a fresh one.
    Column("quota_bytes", BigInteger),  # a mailbox's size limit in octets; NULL: none
    sqlite_autoincrement=True,
)

# Proxy addresses: one primary and any number of secondaries per recipient, unique service-wide.
addresses = Table(
    "addresses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(320), nullable=False, unique=True),  # casefolded local @ ASCII domain
    Column("address", String(320), nullable=False),  # as written
    Column("recipient_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False),
    Column("domain_id", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("is_primary", Boolean, nullable=False),
    Index("ix_addresses_recipient", "recipient_id"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("member_key", String(320), primary_key=True),
    Column("member_address", String(320), nullable=False),
)

# Organization settings (directory/organization.py): one row per tenant that has chosen any.
organization_settings = Table(
    "organization_settings",
    metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("postmaster_address", String(320)),  # a mailbox or group of the tenant; NULL: its first mailbox
    # Last: added for issue 8 (sending), appended so an upgraded table equals a fresh one.
    Column("external_postmaster", String(320)),  # sender of NDRs to outside senders; NULL: postmaster@default
    # Outbound automatic forwarding: automatic | on | off; NULL: automatic.
    Column("auto_forward", String(20)),
)

# Remote domains (directory/remote_domains.py): a tenant's settings for mail to other domains (spec §7).
# No row for "*": the built-in Default has the default settings until it is changed.
remote_domains = Table(
    "remote_domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("pattern", String(255), nullable=False),  # "*", "example.com" or "*.example.com" (A-labels)
    Column("auto_reply", Boolean, nullable=False),
    Column("auto_forward", Boolean, nullable=False),
    Column("oof_type", String(20), nullable=False),
    Column("delivery_reports", Boolean, nullable=False),
    Column("ndr", Boolean, nullable=False),
    Column("content_type", String(20), nullable=False),
    Column("line_wrap", Integer, nullable=False),
    Column("charset", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "name"),
    UniqueConstraint("tenant_id", "pattern"),
    sqlite_autoincrement=True,
)

# Mailbox forwarding (directory/forwarding.py): where a mailbox's mail goes; no row: not forwarded.
mailbox_forwarding = Table(
    "mailbox_forwarding",
    metadata,
    Column("recipient_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("forward_to", String(320), nullable=False),  # any address, as written
    Column("keep_copy", Boolean, nullable=False),
)

# Delivery restrictions of a group; no row: the defaults (only senders inside the organization).
group_delivery_restrictions = Table(
    "group_delivery_restrictions",
    metadata,
    Column("group_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("allow_external_senders", Boolean, nullable=False),
)

# Sending (directory/sending.py): SMTP AUTH switches and size limits per tenant and per mailbox
# (NULL: inherit the tenant's, then the node's `[submission]` default), send-as grants, and the
# durable daily recipient counters and restrictions of senders (spec §5, §8, §10.5, §13).
tenant_sending = Table(
    "tenant_sending",
    metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("smtp_auth", Boolean),  # NULL: enabled (the default)
    Column("max_send_size", BigInteger),  # octets; NULL: the node's default
    Column("max_receive_size", BigInteger),
)

mailbox_sending = Table(
    "mailbox_sending",
    metadata,
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("smtp_auth", Boolean),  # NULL: inherit the tenant's
    Column("max_send_size", BigInteger),  # octets; NULL: inherit
    Column("max_receive_size", BigInteger),
    Column("max_recipients", Integer),  # per message; NULL: the node's default
)

# Send-as: `grantee_id` (a mailbox) may send as `identity_id` (a mailbox or group of the same tenant).
send_as_grants = Table(
    "send_as_grants",
    metadata,
    Column("identity_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("grantee_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_send_as_grantee", "grantee_id"),
)

# Recipients a mailbox sent to per UTC day (day = days since the epoch), counted at commit.
sender_counters = Table(
    "sender_counters",
    metadata,
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("recipients", Integer, nullable=False),
    # Protection (step 6), appended: the day's messages refused as outbound spam (spec §10.5).
    Column("spam", Integer, nullable=False, server_default="0"),
)

# Restricted senders (spec §10.5): blocked until `until` (the next UTC day) or an administrator's release.
restricted_senders = Table(
    "restricted_senders",
    metadata,
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("restricted_at", Float, nullable=False),
    Column("until", Float, nullable=False),
    Column("reason", String(200), nullable=False),
    Index("ix_restricted_senders_tenant", "tenant_id"),
)

# --- mailstore ------------------------------------------------------------------------------------
folders = Table(
    "folders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False),
    # Issue 12 (IMAP): RFC 6154 special use ("" or \\Sent ...), LSUB/LIST-SUBSCRIBED, RFC 7162 modseq.
    Column("special_use", String(20), nullable=False, server_default=""),
    Column("subscribed", Boolean, nullable=False, server_default=true()),
    Column("highestmodseq", BigInteger, nullable=False, server_default="1"),
    UniqueConstraint("mailbox_id", "name"),
    sqlite_autoincrement=True,
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("folder_id", Integer, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("blob_id", String(64), nullable=False),
    Column("prefix", LargeBinary, nullable=False),  # headers the service added at delivery
    Column("size", Integer, nullable=False),
    Column("internal_date", Float, nullable=False),
    Column("flags", String(200), nullable=False, default=""),
    Column("from_header", String(512), nullable=False, default=""),
    Column("subject", String(512), nullable=False, default=""),
    Column("date_header", String(100), nullable=False, default=""),
    Column("message_id_header", String(512), nullable=False, default=""),
    Column("trace_id", String(40), nullable=False, default=""),
    # Issue 12 (IMAP): the message's modification sequence (RFC 7162), and a cache of its ENVELOPE
    # and BODYSTRUCTURE as IMAP text, filled on first FETCH (NULL until then); and of the decoded
    # header fields SEARCH's FROM, TO, CC, BCC and SUBJECT read (JSON, `imap.search.header_cache`;
    # NULL: not computed yet, "": not cacheable, SEARCH reads the bytes).
    Column("modseq", BigInteger, nullable=False, server_default="1"),
    Column("envelope", LargeBinary),
    Column("bodystructure", LargeBinary),
    Column("search_headers", Text),
    UniqueConstraint("folder_id", "uid"),
    Index("ix_messages_folder_modseq", "folder_id", "modseq"),
    # IMAP SELECT reads (uid, flags, modseq) of a whole folder: from this index alone, not the wide
    # rows (prefix, cached structure): 24 -> 5 ms for 10,000 messages on SQLite (bench/README.md).
    Index("ix_messages_folder_flags", "folder_id", "uid", "flags", "modseq"),
)

# A mailbox's last UIDVALIDITY given to a folder (mailstore): a folder made again after a delete
# gets a larger one, even within the same second (RFC 3501 §2.3.1.1).
mailbox_uidvalidity = Table(
    "mailbox_uidvalidity",
    metadata,
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("last", BigInteger, nullable=False),
)

# The IMAP migration's record (migration room): each source message copied, so a re-run copies only
# what is new and an interrupted run resumes. Written in the same transaction as the mailstore copy.
migrated_messages = Table(
    "migrated_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False),
    Column("source", String(600), nullable=False),  # "host:port user" of the source account
    Column("folder", String(1000), nullable=False),  # the source folder's name as the source gives it
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("target_folder_id", Integer, nullable=False),
    Column("target_uid", BigInteger, nullable=False),
    Column("copied_at", Float, nullable=False),
    UniqueConstraint("mailbox_id", "source", "folder", "uidvalidity", "uid"),
)

# --- queue ----------------------------------------------------------------------------------------
spool_messages = Table(
    "spool_messages",
    metadata,
    Column("id", String(40), primary_key=True),  # the internal message id, also the trace id
    Column("sender", String(320), nullable=False),  # "" for the null sender
    Column("blob_id", String(64), nullable=False),
    Column("prefix", LargeBinary, nullable=False),  # the Received header this node added
    Column("size", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("from_header", String(512), nullable=False, default=""),
    Column("subject", String(512), nullable=False, default=""),
    Column("date_header", String(100), nullable=False, default=""),
    Column("message_id_header", String(512), nullable=False, default=""),
    # The oldest queued message, read at every /metrics scrape (issue 9): one index probe, no scan.
    Index("ix_spool_received", "received_at"),
)

queue_recipients = Table(
    "queue_recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(40), ForeignKey("spool_messages.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", Integer),
    Column("recipient", String(320), nullable=False),  # where it goes (after alias and group)
    Column("original_recipient", String(320), nullable=False),  # as given in RCPT
    Column("also_settles", Text, nullable=False, default=""),  # more RCPT rows, newline-separated
    Column("route", String(20), nullable=False),  # local | remote
    Column("mailbox_id", Integer),
    Column("state", String(20), nullable=False),  # pending | deferred | held | failed (queue.spool)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("last_reply", String(512), nullable=False, default=""),  # the last reply; a failed row's final one
    # Outbound delivery (issue 8), appended: an upgraded table equals a fresh one.
    Column("destination", String(255), nullable=False, server_default=""),  # the recipient's domain, ASCII
    Column("envelope_sender", String(320)),  # MAIL FROM for this recipient; NULL: the message's sender
    Column("lease_owner", String(120)),  # the lease (node, process, lease number) that holds the row
    Column("expires_at", Float),  # when a deferred row fails with 4.4.7; NULL: not deferred yet
    Column("delay_notified", Boolean, nullable=False, server_default=false()),  # a delayed DSN went
    Column("remote_mta", String(255), nullable=False, server_default=""),  # the host of the last reply
    Column("last_attempt_at", Float),
    # Scale-out (step 5), appended: the message's receipt time, copied from its spool row so the
    # delay DSN round finds the rows it is due for from an index (`ix_queue_delay_unnotified`).
    Column("received_at", Float, nullable=False, server_default="0"),
    # Protection (step 6), appended: this recipient's protection headers (Authentication-Results,
    # the antispam report), sent above the message's prefix.
    Column("headers", LargeBinary, nullable=False, server_default=""),
    # Connectors (step 7), appended: the outbound connector this recipient leaves by (its smart hosts
    # or MX, its TLS settings, its failure codes and 24-hour expiry); NULL: MX delivery. Not a foreign
    # key: a connector removed while mail waits leaves the row to be routed by MX (delivery.remote).
    Column("connector_id", Integer),
    Index("ix_queue_due", "state", "next_attempt_at"),
    Index("ix_queue_message", "message_id"),
    Index("ix_queue_destination", "destination"),
)
# Scale-out (step 5): a scheduler turn costs what is due, not what waits. The rows leased now, by
# lease end (the "next due" of a lease round), and the rows not yet told of their delay, by receipt
# (the delay DSN round reads only those received before its cut-off): both partial, so a queue of
# rows deferred for days is not in them.
Index(
    "ix_queue_leased",
    queue_recipients.c.lease_until,
    postgresql_where=queue_recipients.c.lease_until.is_not(None),
    sqlite_where=queue_recipients.c.lease_until.is_not(None),
)
_NOT_YET_NOTIFIED = queue_recipients.c.delay_notified.is_(False) & queue_recipients.c.lease_owner.is_(None)
Index(
    "ix_queue_delay_unnotified",
    queue_recipients.c.state,
    queue_recipients.c.received_at,
    postgresql_where=_NOT_YET_NOTIFIED,
    sqlite_where=_NOT_YET_NOTIFIED,
)

# --- trace ----------------------------------------------------------------------------------------
trace_messages = Table(
    "trace_messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("message_id_header", String(512), nullable=False, default=""),
    Column("sender", String(320), nullable=False),
    Column("subject", String(256), nullable=False, default=""),
    Column("size", Integer, nullable=False, default=0),
    Column("client_ip", String(64), nullable=False, default=""),
    Column("received_at", Float, nullable=False),
    Index("ix_trace_messages_received", "received_at"),
)

trace_recipients = Table(
    "trace_recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(40), nullable=False),
    Column("tenant_id", Integer),
    Column("recipient", String(320), nullable=False),  # the address as given (RCPT, group member)
    Column("status", String(20), nullable=False),  # delivered | failed | pending | expanded | ...
    Column("updated_at", Float, nullable=False),
    # Last: added by schema step 3, and ALTER TABLE appends (an upgraded table equals a fresh one).
    Column("resolved", String(320), nullable=False, server_default=""),  # what it resolved to, if anything
    UniqueConstraint("message_id", "recipient"),
    Index("ix_trace_recipients_tenant", "tenant_id", "updated_at"),
)

trace_events = Table(
    "trace_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(40), nullable=False),
    Column("tenant_id", Integer),
    Column("at", Float, nullable=False),
    Column("event", String(20), nullable=False),  # Receive | Resolve | Expand | Deliver | Defer | Fail
    Column("recipient", String(320), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),  # JSON object
    Index("ix_trace_events_message", "message_id"),
)
# Scale-out (step 5): trace search by Message-ID, and by an address without a wildcard (compared
# case-insensitively as lower() = lower(), which these serve). A suffix pattern (`*@contoso.com`) is
# served on PostgreSQL by `migrations.SUFFIX_INDEXES` (outside this metadata: SQLite has no reverse()).
Index("ix_trace_messages_message_id_header", trace_messages.c.message_id_header)
Index("ix_trace_recipients_recipient_lower", func.lower(trace_recipients.c.recipient))
Index("ix_trace_recipients_resolved_lower", func.lower(trace_recipients.c.resolved))

# --- storage: the database blob store (`[node] blob_store = "database"`, storage.blobs) -----------
# A blob's row and its chunks are written in one transaction, so a row names complete content; the
# content is cut in chunks so no message is ever one giant value in memory or on the wire.
blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the content, hex
    Column("size", BigInteger, nullable=False),
    Column("stored_at", Float, nullable=False),  # the last put of this content (the sweep's grace)
    Index("ix_blobs_stored_at", "stored_at"),
)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_id", String(64), ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 0, 1, ... in content order
    Column("data", LargeBinary, nullable=False),
)

# --- cluster --------------------------------------------------------------------------------------
# One row per serving process (a worker of a node, or a node run as one process), kept by its
# heartbeat; `postroom node list` reads it. The id is the process's lease-token owner
# (`queue.leases.LeaseTokens.owner`), so the leases a process holds are the queue rows whose
# `lease_owner` starts with `<id>/`.
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(120), primary_key=True),
    Column("node", String(120), nullable=False),  # [node] name (default: the host name)
    Column("worker", Integer, nullable=False),  # the worker's number under its supervisor, from 1
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(40), nullable=False),
    Column("listeners", Text, nullable=False, default=""),  # JSON list of {name, address, protocol}
    Column("load", Text, nullable=False, default=""),  # JSON object: connections, sessions, ...
    Column("heartbeat_seconds", Float, nullable=False, default=5.0),  # its interval: gone after 3 missed
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float),  # set by a clean stop; NULL while serving (or when it died)
    Index("ix_nodes_heartbeat", "heartbeat_at"),
)

# --- protection (schema step 6) -------------------------------------------------------------------
# Protection policies (directory/protection.py): a tenant's custom anti-spam and anti-malware
# policies and its connection filter. The Default policy of a kind has a row only once the tenant
# changed it (priority NULL: it runs last). `settings` holds the values that differ from the
# defaults (JSON object, keys as `protection.policy` names them); the recipient filters are JSON lists.
protection_policies = Table(
    "protection_policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),  # antispam | antimalware | connection
    Column("name", String(64), nullable=False),
    Column("priority", Integer),  # 0 is highest; NULL: the Default
    Column("enabled", Boolean, nullable=False),
    Column("settings", Text, nullable=False, default="{}"),
    Column("users", Text, nullable=False, default="[]"),
    Column("groups", Text, nullable=False, default="[]"),
    Column("domains", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "kind", "name"),
    sqlite_autoincrement=True,
)

# A mailbox's own safe and blocked senders (directory/protection.py).
mailbox_sender_lists = Table(
    "mailbox_sender_lists",
    metadata,
    Column("mailbox_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
    Column("list", String(10), primary_key=True),  # safe | blocked
    Column("entry", String(320), primary_key=True),  # an address or a domain, lower case
)

# Quarantine (quarantine/): one row per quarantined message and tenant (the same message for two
# tenants is two rows: tenants never share one), its recipients beside it. The body is the blob
# `blob_id` (the blob sweep keeps it while a row names it); `prefix` is the headers protection added.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(40), nullable=False),  # the trace id
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("blob_id", String(64), nullable=False),
    Column("prefix", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sender", String(320), nullable=False),
    Column("from_header", String(512), nullable=False, default=""),
    Column("subject", String(512), nullable=False, default=""),
    Column("message_id_header", String(512), nullable=False, default=""),
    Column("reason", String(40), nullable=False),  # malware | file-type | high-confidence-phish | phish | ...
    Column("policy", String(64), nullable=False),  # the protection policy whose action held it
    Column("access", String(40), nullable=False),  # the quarantine policy: AdminOnlyAccessPolicy | ...
    Column("detail", Text, nullable=False, default="{}"),  # JSON: the verdicts
    Column("received_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("message_id", "tenant_id"),
    Index("ix_quarantine_tenant", "tenant_id", "received_at"),
    Index("ix_quarantine_expires", "expires_at"),
    sqlite_autoincrement=True,
)

quarantine_recipients = Table(
    "quarantine_recipients",
    metadata,
    Column("quarantine_id", Integer, ForeignKey("quarantine.id", ondelete="CASCADE"), primary_key=True),
    Column("recipient", String(320), primary_key=True),  # the address as given
    Column("mailbox_id", Integer),  # the mailbox it resolved to (release delivers there), NULL: none
    Column("released_at", Float),
    Column("released_by", String(320)),
    Column("release_requested_at", Float),
)

# Connectors (directory/connectors.py, spec §3): a tenant's inbound and outbound connectors. List
# settings are JSON arrays of strings; names are unique per tenant, compared case-insensitively
# (`name_key` is the lower-cased name).
inbound_connectors = Table(
    "inbound_connectors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False),
    Column("type", String(20), nullable=False),  # partner | on-premises
    Column("enabled", Boolean, nullable=False),
    Column("sender_domains", Text, nullable=False, default='["*"]'),
    Column("sender_ips", Text, nullable=False, default="[]"),
    Column("tls_certificate_name", String(255), nullable=False, default=""),
    Column("require_tls", Boolean, nullable=False),
    Column("restrict_domains_to_ips", Boolean, nullable=False),
    Column("restrict_domains_to_certificate", Boolean, nullable=False),
    Column("treat_messages_as_internal", Boolean, nullable=False),
    Column("associated_accepted_domains", Text, nullable=False, default="[]"),
    Column("ef_skip_last_ip", Boolean, nullable=False),
    Column("ef_skip_ips", Text, nullable=False, default="[]"),
    Column("ef_users", Text, nullable=False, default="[]"),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "name_key"),
    sqlite_autoincrement=True,
)

outbound_connectors = Table(
    "outbound_connectors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False),
    Column("type", String(20), nullable=False),  # partner | on-premises
    Column("enabled", Boolean, nullable=False),
    Column("recipient_domains", Text, nullable=False, default="[]"),
    Column("all_accepted_domains", Boolean, nullable=False),
    Column("smart_hosts", Text, nullable=False, default="[]"),
    Column("tls", String(30), nullable=False),  # model.connectors.OutboundTls
    Column("tls_domain", String(255), nullable=False, default=""),
    Column("rule_scoped", Boolean, nullable=False),
    Column("route_all_via_on_premises", Boolean, nullable=False),
    Column("sender_rewriting", Boolean, nullable=False),
    Column("validation_recipients", Text, nullable=False, default="[]"),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "name_key"),
    sqlite_autoincrement=True,
)

# The validation history of outbound connectors (spec §3.5): one row per validation run and
# recipient, newest kept; `steps` is JSON: [{"step": "dns", "ok": true, "detail": "...", "reply": ""}, ...].
connector_validations = Table(
    "connector_validations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("connector_id", Integer, ForeignKey("outbound_connectors.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("run", String(40), nullable=False),  # one validation run (several recipients share it)
    Column("recipient", String(320), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("reply", String(512), nullable=False, default=""),  # the failure's reply, with its code
    Column("steps", Text, nullable=False, default="[]"),
    Column("at", Float, nullable=False),
    Index("ix_connector_validations_connector", "connector_id", "at"),
    sqlite_autoincrement=True,
)

# The scenario a tenant applied (`postroom scenario apply`, spec §4): which row of the table its mail
# flow follows, and the parameters it was applied with (JSON), so `scenario check` and `domain check`
# judge its DNS by that scenario (an MX at on-premises or a third party is then expected).
tenant_scenarios = Table(
    "tenant_scenarios",
    metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("scenario", String(40), nullable=False),
    Column("parameters", Text, nullable=False, default="{}"),
    Column("applied_at", Float, nullable=False),
)

# The admin API's credentials (directory/api_tokens.py): a tenant administrator's bearer tokens, which
# the operator hands out. Only the SHA-256 of a token is kept (tokens are 256 random bits, so a slow hash
# would add nothing); the token itself is shown once, when made.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "name_key"),
    sqlite_autoincrement=True,
)
