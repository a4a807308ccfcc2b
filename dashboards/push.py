"""Upload the dashboards, their folder and the datasource to a running Grafana (HTTP API).

Idempotent: the folder and datasource are created when missing and updated otherwise, and every
dashboard is saved under its fixed uid with ``overwrite``, so a re-push makes a new version of
the same dashboard instead of a copy. The SQL annotations (alerts, case transitions) travel
inside the dashboards. Provisioning files are the other way in (docker-compose); a dashboard
provisioned from a file cannot be overwritten through the API, so use one way per Grafana.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.grafana import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_UID
from gridwatch.errors import GridwatchError

log = logging.getLogger(__name__)

FOLDER_TITLE = "gridwatch"
NOT_FOUND = 404


class PushError(GridwatchError):
    """Grafana refused or could not be reached."""


@dataclass(frozen=True)
class Pushed:
    uid: str
    version: int
    url: str


@dataclass(frozen=True)
class Login:
    """The read-only role Grafana logs in as (``gridwatch store grant-reader``)."""

    user: str
    password: str = field(repr=False)


def datasource(
    database_url: str, reader: Login, *, host: str | None, timescaledb: bool
) -> dict[str, Any]:
    """The gridwatch datasource as Grafana's API takes it: the database of a PostgreSQL URL,
    read as ``reader``. The URL's own user and password, the writer's, never reach Grafana.

    ``host`` is host:port as Grafana reaches the database, when that differs from the URL's
    (inside docker-compose it is ``timescaledb:5432``).
    """
    parts = urlsplit(database_url)
    if reader.user == (parts.username or "postgres"):
        raise PushError(
            f"the datasource would log in as {reader.user}, the writer of GRIDWATCH_DATABASE_URL;"
            " give it the read-only role of `gridwatch store grant-reader`"
        )
    database = parts.path.lstrip("/") or "postgres"
    return {
        "uid": DATASOURCE_UID,
        "name": "gridwatch",
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": host or f"{parts.hostname}:{parts.port or 5432}",
        "user": reader.user,
        "isDefault": True,
        "jsonData": {
            "database": database,
            "sslmode": "disable",
            "timescaledb": timescaledb,
            "postgresVersion": 1600,
        },
        "secureJsonData": {"password": reader.password},
    }


def _found(call: Any, *args: Any) -> bool:
    try:
        call(*args)
    except GrafanaClientError as err:
        if err.status_code == NOT_FOUND:
            return False
        raise
    return True


def push(
    url: str,
    credential: tuple[str, str] | str,
    dashboards: Mapping[str, Mapping[str, Any]],
    source: Mapping[str, Any] | None = None,
) -> list[Pushed]:
    """Push to the Grafana at ``url``; ``credential`` is (user, password) or an API token."""
    api: Any = GrafanaApi.from_url(url, credential=credential)
    try:
        if not _found(api.folder.get_folder, FOLDER_UID):
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
            log.info("created folder %s", FOLDER_UID)
        if source is not None:
            if _found(api.datasource.get_datasource_by_uid, DATASOURCE_UID):
                api.datasource.update_datasource_by_uid(DATASOURCE_UID, dict(source))
            else:
                api.datasource.create_datasource(dict(source))
            log.info("datasource %s is %s", DATASOURCE_UID, source["url"])
        pushed = []
        for name, document in dashboards.items():
            body = {
                "dashboard": {k: v for k, v in document.items() if k not in {"id", "version"}},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": f"gridwatch dashboards push ({name})",
            }
            reply = api.dashboard.update_dashboard(body)
            pushed.append(Pushed(reply["uid"], int(reply["version"]), reply.get("url", "")))
            log.info("dashboard %s is at version %s", reply["uid"], reply["version"])
    except GrafanaException as err:
        raise PushError(f"Grafana at {url}: {err.message}") from err
    except OSError as err:
        raise PushError(f"cannot reach Grafana at {url}: {err}") from err
    return pushed
