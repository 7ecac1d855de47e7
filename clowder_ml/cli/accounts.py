"""``clowder-ml login``, ``clowder-ml tokens ...`` and ``clowder-ml users ...``: logging
in, API tokens and user accounts.

``login`` is registered on the root app by :mod:`clowder_ml.cli.app`, which also adds
``tokens_app`` and ``users_app`` as sub-commands.
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
