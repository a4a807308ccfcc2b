"""`gridwatch dashboards push` against a real HTTP server on 127.0.0.1.

The server below stands in for Grafana: no Grafana can run on this machine. It implements the
endpoints of Grafana's HTTP API that the push uses, with Grafana's semantics for them — basic
auth, 404 for a missing folder or datasource, and dashboards saved by uid whose version grows by
one on every save with ``overwrite`` — and records each request, so the test can check what a
real Grafana would have been asked to do.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from dashboards import build
from dashboards.grafana import DATASOURCE_UID, FOLDER_UID
from dashboards.push import Login, PushError, datasource, push
from gridwatch.cli import app
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site

USER, PASSWORD = "admin", "s3cret-for-tests"


@dataclass
class GrafanaState:
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


class StandInGrafana(BaseHTTPRequestHandler):
    state: GrafanaState

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Keep the test output quiet."""

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._reply(401, {"message": "invalid username or password"})
            return False
        return True

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length", 0))
        return json.loads(self.rfile.read(length)) if length else {}

    def _handle(self, method: str) -> None:
        self.state.requests.append((method, self.path))
        if not self._authorised():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        s = self.state
        match method, parts:
            case "GET", ["api", "folders", uid]:
                found = s.folders.get(uid)
                self._reply(200, found) if found else self._reply(404, {"message": "not found"})
            case "POST", ["api", "folders"]:
                body = self._body()
                s.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
                self._reply(200, s.folders[body["uid"]])
            case "GET", ["api", "datasources", "uid", uid]:
                found = s.datasources.get(uid)
                self._reply(200, found) if found else self._reply(404, {"message": "not found"})
            case "POST", ["api", "datasources"]:
                body = self._body()
                s.datasources[body["uid"]] = body
                self._reply(200, {"message": "Datasource added", "datasource": body})
            case "PUT", ["api", "datasources", "uid", uid]:
                s.datasources[uid] = self._body()
                self._reply(200, {"message": "Datasource updated"})
            case "POST", ["api", "dashboards", "db"]:
                body = self._body()
                dashboard, uid = body["dashboard"], body["dashboard"]["uid"]
                if body.get("folderUid") not in s.folders:
                    self._reply(400, {"message": "folder not found"})
                    return
                if uid in s.dashboards and not body.get("overwrite"):
                    self._reply(412, {"status": "version-mismatch"})
                    return
                version = s.dashboards.get(uid, {}).get("version", 0) + 1
                s.dashboards[uid] = {**dashboard, "version": version, "id": len(s.dashboards)}
                self._reply(
                    200,
                    {"status": "success", "uid": uid, "version": version, "url": f"/d/{uid}/x"},
                )
            case _:
                self._reply(404, {"message": f"{method} {self.path} is not implemented"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")


@pytest.fixture
def grafana() -> Iterator[tuple[str, GrafanaState]]:
    state = GrafanaState()
    handler = type("Handler", (StandInGrafana,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


DATABASE_URL = "postgresql://gridwatch:dbpass@db.example:5433/gridwatch"
READER = Login("grafana_reader", "reader-pass-for-tests")


def test_push_creates_then_versions_the_same_dashboards(
    grafana: tuple[str, GrafanaState],
) -> None:
    url, state = grafana
    documents = build.dashboards(load_site(SAMPLE_SITE))
    source = datasource(DATABASE_URL, READER, host="timescaledb:5432", timescaledb=True)

    first = push(url, (USER, PASSWORD), documents, source)
    assert {p.uid for p in first} == {d["uid"] for d in documents.values()}
    assert all(p.version == 1 for p in first)
    assert set(state.folders) == {FOLDER_UID}
    stored = state.datasources[DATASOURCE_UID]
    assert stored["url"] == "timescaledb:5432" and stored["user"] == READER.user
    assert stored["jsonData"]["database"] == "gridwatch"
    assert stored["secureJsonData"]["password"] == READER.password

    second = push(url, (USER, PASSWORD), documents, source)
    assert [p.uid for p in second] == [p.uid for p in first]
    assert all(p.version == 2 for p in second), "a re-push is a new version, not a copy"
    assert len(state.dashboards) == len(documents)
    assert ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") in state.requests
    assert sum(1 for m, p in state.requests if (m, p) == ("POST", "/api/folders")) == 1
    saved = state.dashboards["gridwatch-command-center"]
    assert saved["panels"] == documents["command-center.json"]["panels"]


def test_push_reports_refused_credentials(grafana: tuple[str, GrafanaState]) -> None:
    url, state = grafana
    with pytest.raises(PushError, match="Unauthorized"):
        push(url, (USER, "wrong"), build.dashboards(load_site(SAMPLE_SITE)))
    assert not state.dashboards


def test_the_datasource_never_logs_in_as_the_writer() -> None:
    with pytest.raises(PushError, match="writer"):
        datasource(DATABASE_URL, Login("gridwatch", "dbpass"), host=None, timescaledb=True)


def test_the_cli_pushes_with_the_password_from_the_environment(
    grafana: tuple[str, GrafanaState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = grafana
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("GRIDWATCH_READER_PASSWORD", READER.password)
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url])
    assert result.exit_code == 0, result.output
    assert "gridwatch-command-center: version 1" in result.output
    stored = state.datasources[DATASOURCE_UID]
    assert stored["url"] == "db.example:5433" and stored["user"] == READER.user
    assert stored["secureJsonData"]["password"] == READER.password
    assert "dbpass" not in json.dumps(state.datasources)


@pytest.mark.parametrize("reader_password", [None, "change-me-reader", "short"])
def test_the_cli_refuses_to_push_without_a_real_reader_password(
    grafana: tuple[str, GrafanaState], monkeypatch: pytest.MonkeyPatch, reader_password: str | None
) -> None:
    url, state = grafana
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("GRIDWATCH_READER_PASSWORD", raising=False)
    if reader_password is not None:
        monkeypatch.setenv("GRIDWATCH_READER_PASSWORD", reader_password)
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url])
    assert result.exit_code == 2 and "GRIDWATCH_READER_PASSWORD" in result.output
    assert not state.datasources and not state.dashboards
