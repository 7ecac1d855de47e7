"""``clowder-ml login``, ``clowder-ml tokens ...``, ``clowder-ml users ...`` and
``clowder-ml audit``: logging in, API tokens, user accounts and the audit trail.

``login`` and ``audit`` are registered on the root app by :mod:`clowder_ml.cli.app`, which
also adds ``tokens_app`` and ``users_app`` as sub-commands.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from clowder_ml.cli.common import JsonOpt, console, make_client, print_json, run

tokens_app = typer.Typer(help="Manage your API tokens.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)


def login(
    url: Annotated[str, typer.Option(envvar="CLOWDER_ML_URL", help="Server URL")]
    = "http://127.0.0.1:8000",
    username: Annotated[str, typer.Option(prompt=True)] = "admin",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                          envvar="CLOWDER_ML_PASSWORD")] = "",
    token_name: Annotated[str, typer.Option(help="Name for the new token")] = "cli",
) -> None:
    """Log in and save a token for later commands."""
    from clowder_ml.client import Client, save_login

    client = run(lambda: Client.login(url, username, password, token_name))
    path = save_login(client.url, client.token or "")
    console.print(f"Logged in to {client.url} as [bold]{username}[/]; token saved in {path}.")


@tokens_app.command("ls")
def tokens_ls(as_json: JsonOpt = False) -> None:
    """List your API tokens."""
    rows = run(lambda: make_client().list_tokens())
    if as_json:
        return print_json(rows)
    table = Table("id", "name", "created", "expires", "last used")
    for t in rows:
        table.add_row(t["id"], t["name"], t["created_at"][:19], (t["expires_at"] or "never")[:19],
                      (t["last_used_at"] or "-")[:19])
    console.print(table)


@tokens_app.command("create")
def tokens_create(name: str, expires_days: Annotated[float | None, typer.Option()] = None,
                  ) -> None:
    """Create a new API token (printed once)."""
    t = run(lambda: make_client().create_token(name, expires_days))
    console.print(f"Token [bold]{t['name']}[/] (id {t['id']}); store it now, it is shown once:")
    sys.stdout.write(t["token"] + "\n")


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by id."""
    run(lambda: make_client().revoke_token(token_id))
    console.print(f"Revoked token {token_id}.")


@users_app.command("create")
def users_create(username: str,
                 password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                                       confirmation_prompt=True)],
                 admin: Annotated[bool, typer.Option("--admin")] = False) -> None:
    """Create a user (admins only)."""
    u = run(lambda: make_client().create_user(username, password, admin))
    console.print(f"Created user [bold]{u['username']}[/].")


@users_app.command("unlock")
def users_unlock(username: str) -> None:
    """Clear an account's failed log-ins, so it may log in at once (admins only)."""
    out = run(lambda: make_client().unlock_user(username))
    what = "cleared its failed log-ins" if out["had_failures"] else "it had no failed log-ins"
    console.print(f"Unlocked [bold]{username}[/]: {what}.")


def audit(
    action: Annotated[str | None, typer.Option(
        help="login, login.unlocked, token.created, token.revoked, session.ended, "
             "share.granted, share.revoked, user.created; a prefix (share) finds all of it")]
    = None,
    actor: Annotated[str | None, typer.Option(help="The account acting (or tried)")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, failure or refused")] = None,
    client: Annotated[str | None, typer.Option(help="Client address")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601)")] = None,
    before: Annotated[int | None, typer.Option(help="Older than this id (next page)")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit trail, newest first: log-ins, tokens, sharing, users (admins only)."""
    page = run(lambda: make_client().audit(action=action, actor=actor, outcome=outcome,
                                           client=client, since=since, until=until,
                                           before=before, limit=limit))
    if as_json:
        return print_json(page)
    table = Table("id", "time (UTC)", "action", "outcome", "actor", "client", "target",
                  "detail")
    for e in page["events"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        table.add_row(str(e["id"]), e["at"][:19].replace("T", " "), e["action"], e["outcome"],
                      e["actor"], e["client"] or "-", e["target"] or "-", detail)
    console.print(table)
    if page["next_before"] is not None:
        console.print(f"[dim]Older records: --before {page['next_before']}[/]")
