"""`postroom quarantine ...`: messages protection held: list, show, preview, release, request release,
delete, purge (spec §10.6).

The commands act on the database directly, as the service operator; `--tenant T` acts as that
tenant's administrator (its rows only) and `--as-user ADDRESS` as that mailbox's user (their own
recipient rows, with what the message's quarantine policy lets a recipient do). A release delivers
at once: a serving node needs no notice. Text from the message (sender, subject, the preview) is
printed inert (`cli.output.visible`, and the preview is rendered safe by `quarantine.preview`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from postroom.cli.context import JsonOption, TenantScopeOption, as_dict, node, refusals, scope_for
from postroom.cli.output import console, emit_json, fail, fields, moment, table, visible, when
from postroom.directory import RecipientKind
from postroom.model.scope import OPERATOR, Scope, TenantScope
from postroom.quarantine import (
    LIST_LIMIT,
    QuarantineAccessError,
    QuarantinedMessage,
    QuarantineNotFoundError,
    QuarantineReason,
    QuarantineRequestError,
    QuarantineUser,
)
from postroom.storage import BlobMissingError

quarantine_app = typer.Typer(
    help="Quarantined messages: list, show, preview, release, delete.", no_args_is_help=True
)

REASONS = [reason.value for reason in QuarantineReason]

IdArgument = Annotated[int, typer.Argument(help="The quarantined message's id (`postroom quarantine list`).")]
AsUserOption = Annotated[
    str | None,
    typer.Option(
        "--as-user", help="Act as this mailbox's user: their own recipient rows, a recipient's rights."
    ),
]


def _acting(tenant: str | None, as_user: str | None) -> tuple[Scope, QuarantineUser | None]:
    """Whose rows a command acts on: the operator, a tenant's administrator, or a mailbox user."""
    scope = scope_for(tenant)
    if as_user is None:
        return scope, None
    with refusals():
        found = node().directory.get_recipient(scope, as_user)
    if found.kind is not RecipientKind.MAILBOX:
        raise fail(f"{as_user} is a {found.kind.value}: --as-user names a mailbox, whose user acts", 2)
    return TenantScope(found.tenant_id), QuarantineUser(found.id, found.primary_address)


@contextlib.contextmanager
def _answered() -> Iterator[None]:
    """Turn a refusal into what to do: exit 1 when refused, 2 when the request cannot be right."""
    try:
        yield
    except QuarantineNotFoundError as error:
        raise fail(f"{error}: `postroom quarantine list` shows the ids you can see") from None
    except QuarantineRequestError as error:
        raise fail(str(error), 2) from None
    except QuarantineAccessError as error:
        raise fail(str(error)) from None
    except BlobMissingError as error:
        raise fail(
            f"the message's content is missing from the blob store ({error}): delete it from quarantine, "
            "and check the blob store's disk or database"
        ) from None


def _tenant_names() -> dict[int, str]:
    return {t.id: t.name for t in node().directory.list_tenants(OPERATOR)}


def _message_json(message: QuarantinedMessage, tenants: dict[int, str]) -> dict[str, object]:
    return {
        **as_dict(message),
        "tenant": tenants.get(message.tenant_id, ""),
        "state": message.state,
        "admin_only": message.admin_only,
    }


@quarantine_app.command("list")
def quarantine_list(
    tenant: TenantScopeOption = None,
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="Held for this recipient; one wildcard: *@contoso.com.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help=f"Held as: {', '.join(REASONS)}.")] = None,
    sender: Annotated[
        str | None, typer.Option("--sender", help="From this envelope sender; one wildcard allowed.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Received from this time (ISO 8601, UTC).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=LIST_LIMIT, help="At most this many.")
    ] = LIST_LIMIT,
    as_user: AsUserOption = None,
    json_output: JsonOption = False,
) -> None:
    """Quarantined messages, newest first."""
    if reason is not None and reason not in REASONS:
        raise fail(f"--reason {reason!r} is not a quarantine reason: use one of {', '.join(REASONS)}", 2)
    received_since = moment(since, "--since")
    scope, user = _acting(tenant, as_user)
    with _answered():
        messages = node().quarantine.list_messages(
            scope,
            recipient=recipient,
            reason=reason,
            sender=sender,
            since=received_since,
            user=user,
            limit=limit,
        )
    tenants = _tenant_names()
    if json_output:
        return emit_json([_message_json(m, tenants) for m in messages])
    table(
        None,
        ["id", "received (UTC)", "tenant", "sender", "subject", "reason", "recipients", "state", "expires"],
        [
            (
                m.id,
                when(m.received_at),
                tenants.get(m.tenant_id, m.tenant_id),
                m.sender or "<>",
                m.subject,
                m.reason,
                ", ".join(r.recipient for r in m.recipients),
                m.state,
                when(m.expires_at),
            )
            for m in messages
        ],
    )
    if len(messages) == limit:
        console.print(f"the newest {limit} shown; narrow with --since, --reason or --recipient", markup=False)


@quarantine_app.command("show")
def quarantine_show(
    quarantine_id: IdArgument,
    tenant: TenantScopeOption = None,
    as_user: AsUserOption = None,
    json_output: JsonOption = False,
) -> None:
    """One quarantined message: why it was held, its verdicts, recipients, release state and expiry."""
    scope, user = _acting(tenant, as_user)
    with _answered():
        message = node().quarantine.show(scope, quarantine_id, user=user)
    tenants = _tenant_names()
    if json_output:
        return emit_json(_message_json(message, tenants))
    fields(
        [
            ("id", message.id),
            ("trace id", message.message_id),
            ("tenant", tenants.get(message.tenant_id, message.tenant_id)),
            ("received", when(message.received_at)),
            ("expires", when(message.expires_at)),
            ("sender", message.sender or "<>"),
            ("From", message.from_header),
            ("subject", message.subject),
            ("Message-ID", message.message_id_header or "-"),
            ("size", message.size),
            ("reason", message.reason),
            ("policy", message.policy),
            ("quarantine policy", message.access),
            ("state", message.state),
        ]
    )
    table(
        "recipients",
        ["recipient", "mailbox", "released", "by", "release requested"],
        [
            (
                r.recipient,
                "yes" if r.mailbox_id is not None else "no",
                when(r.released_at),
                r.released_by or "-",
                when(r.release_requested_at),
            )
            for r in message.recipients
        ],
    )
    if message.detail:
        table("verdicts", ["check", "verdict"], [(k, v) for k, v in sorted(message.detail.items())])


@quarantine_app.command("preview")
def quarantine_preview(
    quarantine_id: IdArgument,
    tenant: TenantScopeOption = None,
    as_user: AsUserOption = None,
    json_output: JsonOption = False,
) -> None:
    """The message's header fields and its text, rendered safe: nothing runs, nothing is fetched."""
    scope, user = _acting(tenant, as_user)
    with _answered():
        preview = node().quarantine.preview(scope, quarantine_id, user=user)
    rendering = preview.rendering
    if json_output:
        return emit_json({"id": preview.message.id, **as_dict(rendering)})
    for name, value in rendering.headers:
        console.print(visible(f"{name}: {value}"))
    console.print()
    if rendering.source == "text/html":
        console.print("[the HTML part, reduced to text; links shown as <target>]", markup=False)
    elif not rendering.source:
        console.print("[no text part]", markup=False)
    console.print(visible(rendering.text, newlines=True))
    if rendering.attachments:
        console.print()
        table(
            "attachments",
            ["name", "type", "size"],
            [(a.filename, a.content_type, a.size) for a in rendering.attachments],
        )
    if rendering.truncated:
        console.print("[cut at the preview's limits]", markup=False)
    if rendering.problems:
        console.print(visible("malformed: " + "; ".join(rendering.problems)))


@quarantine_app.command("release")
def quarantine_release(
    quarantine_id: IdArgument,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="Only to this recipient of the message (repeat for more); default: all."),
    ] = None,
    report_false_positive: Annotated[
        bool,
        typer.Option("--report-false-positive", help="Also tell the spam engine the message is not spam."),
    ] = False,
    tenant: TenantScopeOption = None,
    as_user: AsUserOption = None,
) -> None:
    """Release a message to its recipients' Inboxes (stamped released, SFV:SKQ), traced."""
    scope, user = _acting(tenant, as_user)
    with _answered():
        released = asyncio.run(
            node().quarantine.release(
                scope, quarantine_id, to=to or (), user=user, report_false_positive=report_false_positive
            )
        )
    for address in released.delivered:
        console.print(visible(f"released to {address} (Inbox)"))
    for address, why in released.not_delivered:
        console.print(visible(f"not released to {address}: {why}; it stays in quarantine"))
    if released.report:
        console.print(visible(f"false positive report: {released.report}"))
    if not released.delivered:
        raise fail(f"quarantined message {quarantine_id} was released to no one")


@quarantine_app.command("request-release")
def quarantine_request_release(
    quarantine_id: IdArgument,
    as_user: Annotated[
        str | None, typer.Option("--as-user", help="The recipient asking (a mailbox's address).")
    ] = None,
    tenant: TenantScopeOption = None,
) -> None:
    """Ask an administrator to release a message held for you (high-confidence phish)."""
    if as_user is None:
        raise fail(
            "a release request is a recipient's: give --as-user ADDRESS; an administrator releases "
            f"with `postroom quarantine release {quarantine_id}`",
            2,
        )
    scope, user = _acting(tenant, as_user)
    with _answered():
        count = node().quarantine.request_release(scope, quarantine_id, user)
    if count:
        console.print(
            f"release requested for message {quarantine_id}: an administrator decides", markup=False
        )
    else:
        console.print(f"release of message {quarantine_id} was requested already", markup=False)


@quarantine_app.command("delete")
def quarantine_delete(
    quarantine_id: IdArgument, tenant: TenantScopeOption = None, as_user: AsUserOption = None
) -> None:
    """Delete a message from quarantine for good (a user: only their own copy), traced."""
    scope, user = _acting(tenant, as_user)
    with _answered():
        count = node().quarantine.delete(scope, quarantine_id, user=user)
    console.print(f"deleted message {quarantine_id} from quarantine ({count} recipient(s))", markup=False)


@quarantine_app.command("purge")
def quarantine_purge() -> None:
    """Delete every expired quarantined message now (the node does this every quarantine_purge_interval)."""
    removed = node().quarantine.purge()
    console.print(f"removed {removed} expired quarantined message(s)", markup=False)
