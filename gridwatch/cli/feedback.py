"""Operators' feedback on camera detections: ``gridwatch cameras false-alarm``."""

from __future__ import annotations

import getpass
from typing import Annotated

import psycopg
import typer

from gridwatch.cli.common import cameras_app, console, fail
from gridwatch.settings import Settings


@cameras_app.command("false-alarm")
def cameras_false_alarm(
    detection_id: Annotated[str, typer.Argument(help="id of a stored camera detection")],
    operator: Annotated[
        str | None,
        typer.Option(envvar="GRIDWATCH_OPERATOR", help="who rejects it (default: login name)"),
    ] = None,
    reason: Annotated[str, typer.Option(help="what it really was, e.g. 夕阳反光")] = "",
) -> None:
    """Mark a detection as a false alarm: kept with its snapshot as a training negative."""
    from gridwatch.store.feedback import mark_false_alarm
    from gridwatch.store.schema import ensure_schema

    settings = Settings()
    if settings.database_url is None:
        raise fail("set GRIDWATCH_DATABASE_URL")
    who = operator or getpass.getuser()
    try:
        with psycopg.connect(settings.database_url.get_secret_value()) as conn:
            ensure_schema(conn)
            mark = mark_false_alarm(
                conn,
                detection_id=detection_id,
                operator=who,
                reason=reason,
                evidence_dir=settings.evidence_dir,
            )
    except (LookupError, ValueError) as err:
        raise fail(str(err.args[0])) from err
    except psycopg.Error as err:
        raise fail(f"cannot mark {detection_id}: {err}") from err
    console.print(
        f"{mark.detection_id} ({mark.kind} on {mark.source_id}) is a false alarm, marked by"
        f" {mark.operator} at {mark.marked_at.isoformat(timespec='seconds')}"
    )
