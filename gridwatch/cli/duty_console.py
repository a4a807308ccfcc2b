"""`gridwatch console`: the duty officer's web console, and its operator accounts."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import psycopg
import typer

from gridwatch.cli.common import app, console, fail, setup_logging, site_or_fail, stop_on_signal
from gridwatch.liveness import Heartbeat
from gridwatch.settings import Settings
from gridwatch.store.schema import ensure_schema

console_app = typer.Typer(
    help="The duty officer's web console (run without a command to serve it).",
    invoke_without_command=True,
)
app.add_typer(console_app, name="console")


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise fail("set GRIDWATCH_DATABASE_URL")
    return settings.database_url.get_secret_value()


@console_app.callback()
def console_serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="port the console listens on")] = 8710,
) -> None:
    """Serve the console: live alerts, broadcast approval, cases, silences, false alarms."""
    if ctx.invoked_subcommand is not None:
        return
    from alerts.console.server import serve
    from alerts.console.web import Console

    settings = Settings()
    setup_logging(settings)
    site, database_url = site_or_fail(settings), _database_url(settings)
    with psycopg.connect(database_url) as conn:
        ensure_schema(conn)

    async def main() -> None:
        stop = asyncio.Event()
        await stop_on_signal(stop)
        web_console = Console(
            site, database_url, settings.evidence_dir, public_url=settings.console_url
        )
        heartbeat = Heartbeat(settings.liveness_dir, "console")
        await serve(web_console, settings.console_host, port, stop, beat=heartbeat.beat)

    asyncio.run(main())


@console_app.command("add-user")
def console_add_user(
    name: Annotated[str, typer.Argument(help="the operator's login name")],
    role: Annotated[str, typer.Option(help="duty_officer (may act) or viewer (may look)")],
) -> None:
    """Create an operator (or reset one's password and role). The password is asked for, or
    read as the first line of standard input, never taken as an argument."""
    from alerts.console.accounts import AccountError, Role, add_operator

    try:
        chosen = Role(role)
    except ValueError as err:
        raise fail(f"--role must be one of {', '.join(r.value for r in Role)}") from err
    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    settings = Settings()
    with psycopg.connect(_database_url(settings)) as conn:
        ensure_schema(conn)
        try:
            with conn.transaction():
                add_operator(conn, name, chosen, password)
        except AccountError as err:
            raise fail(str(err)) from err
    console.print(f"operator {name} ({chosen.value}) saved")
