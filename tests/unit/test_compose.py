"""Static checks of the production stack: docker-compose.yml, the Dockerfile, .env.example, the
Mosquitto config and the Grafana provisioning. No Docker daemon is needed; the one test that
runs `docker compose config` needs only the compose CLI and is skipped where it is absent.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from gridwatch import topics
from gridwatch.settings import Settings
from gridwatch.store.reader import DEFAULT_READER

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
MOSQUITTO_CONF = MOSQUITTO_DIR / "mosquitto.conf"
GRAFANA_DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "gridwatch.yaml"
GRAFANA_DASHBOARDS = ROOT / "dashboards" / "provisioning" / "dashboards" / "gridwatch.yaml"

INFRASTRUCTURE = {"kafka", "kafka-init", "timescaledb", "mosquitto", "grafana"}
# Each gridwatch role (a service built from ./Dockerfile) and the CLI path it runs.
ROLES: dict[str, tuple[str, ...]] = {
    "ingest-mqtt": ("ingest", "mqtt"),
    "streams-worker": ("streams", "worker"),
    "alerts-engine": ("alerts", "engine"),
    "alerts-relay": ("alerts", "relay"),
    "store-writer": ("store", "writer"),
    "console": ("console",),
    "simulator": ("simulate", "sensors"),
    "db-init": ("store", "grant-reader"),
}
EXPECTED_COMMANDS = {
    ("ingest", "mqtt"),
    ("streams", "worker"),
    ("alerts", "engine"),
    ("alerts", "relay"),
    ("store", "writer"),
    ("console",),
    ("simulate", "sensors"),
    ("store", "grant-reader"),
}
# Bind-mounted files that operators create and that are never committed.
OPERATOR_PROVIDED = {
    "deploy/mosquitto/passwd",
    "deploy/mosquitto/certs",
    "deploy/mosquitto/certs/ca.crt",
}
ONE_SHOT = {"kafka-init", "db-init"}
# The simulator logs in to MQTT as itself: the ACL lets it, and only it, publish for any device.
SIMULATOR_USER = "simulator"
SIMULATOR_LOGIN = ("GRIDWATCH_MQTT_URL", "GRIDWATCH_MQTT_PASSWORD")
SECRET_HOLDERS: dict[str, set[str]] = {
    "db-init": {"GRIDWATCH_READER_PASSWORD"},
    "alerts-relay": {
        "SINK_HMAC_KEY",
        "GRIDWATCH_CAP_SIGNING_KEY",
        "GRIDWATCH_CAP_SIGNING_CERT",
        "GRIDWATCH_CALLBACK_HOST",
    },
    "console": {"GRIDWATCH_CONSOLE_HOST", "GRIDWATCH_CONSOLE_URL"},
}
DATASOURCE_UID = "gridwatch-db"
DASHBOARDS_IN_GRAFANA = "/var/lib/grafana/dashboards"
PROVISIONING_IN_GRAFANA = "/etc/grafana/provisioning"
# Grafana serves files under public/ itself; a Geomap GeoJSON layer loads its src from there.
GRAFANA_MAPS = "/usr/share/grafana/public/maps/gridwatch"
MAPS_URL = "public/maps/gridwatch/"

# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt} and the bare $VAR.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY", re.I)
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]+:(?P<password>[^@/\s]+)@")
_REFERENCE = "<from the environment>"


# --- helpers --------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


@cache
def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), (
            f".env.example:{number}: not NAME=value: {raw!r}"
        )
        assert name not in values, f".env.example:{number}: {name} is listed twice"
        values[name] = value
    return values


def references(text: str) -> set[str]:
    """The variables that compose would substitute in ``text`` (``$$`` is not one)."""
    return {
        match["braced"] or match["bare"]
        for match in _VARIABLE.finditer(text)
        if not match["escaped"]
    }


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute like compose does; a missing required variable raises ``KeyError``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        present = value is not None if not op.startswith(":") else bool(value)
        if op.endswith("-"):
            return value if present and value is not None else arg
        if op.endswith("?"):
            if not present or value is None:
                raise KeyError(f"{name}: {arg}")
            return value
        if op.endswith("+"):
            return arg if present else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def strings(node: object) -> Iterator[str]:
    """Every string in a parsed YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` in either form (mapping or list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def interpolated_environment(service: Mapping[str, Any]) -> dict[str, str]:
    return {name: interpolate(value, env_example()) for name, value in environment(service).items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: dict(spec or {"condition": "service_started"}) for name, spec in deps.items()}


def mounts(service: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Volumes in long form: type, source, target, read_only (and bind options)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping):
            yield dict(volume)
            continue
        parts = str(volume).split(":")
        if len(parts) == 1:
            yield {"type": "volume", "source": None, "target": parts[0], "read_only": False}
            continue
        source, target = parts[0], parts[1]
        options = parts[2].split(",") if len(parts) > 2 else []
        is_path = source.startswith((".", "/", "~", "$"))
        yield {
            "type": "bind" if is_path else "volume",
            "source": source,
            "target": target,
            "read_only": "ro" in options,
        }


def bind_source(mount: Mapping[str, Any]) -> Path:
    """A bind mount's host path, resolved like compose: against the project directory."""
    source = Path(interpolate(str(mount["source"]), env_example())).expanduser()
    return source if source.is_absolute() else (ROOT / source).resolve()


def mount_at(service: Mapping[str, Any], target: str) -> dict[str, Any]:
    found = [mount for mount in mounts(service) if mount["target"] == target]
    assert len(found) == 1, f"expected one mount at {target}, found {found}"
    return found[0]


def role_services() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile: the gridwatch roles."""
    return {name: spec for name, spec in services().items() if "build" in spec}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def image_entrypoint() -> list[str]:
    entrypoints = [args for op, args in dockerfile_instructions() if op == "ENTRYPOINT"]
    assert entrypoints, "the Dockerfile sets no ENTRYPOINT"
    entrypoint = yaml.safe_load(entrypoints[-1])  # the exec form is a JSON array
    assert isinstance(entrypoint, list), "ENTRYPOINT must use the exec (JSON array) form"
    return [str(part) for part in entrypoint]


def cli_path(service: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``gridwatch`` subcommand path a role runs: image entrypoint + command, options cut."""
    assert "entrypoint" not in service, "roles keep the image's entrypoint (`gridwatch`)"
    command = service.get("command")
    assert command is not None, "a role must say which subcommand it runs"
    argv = image_entrypoint() + (shlex.split(command) if isinstance(command, str) else command)
    assert argv[0] == "gridwatch", f"roles run the gridwatch CLI, not {argv[0]!r}"
    path: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-"):
            break
        path.append(arg)
    return tuple(path)


def _is_group(command: Any) -> bool:
    return callable(getattr(command, "get_command", None)) and callable(
        getattr(command, "list_commands", None)
    )


def resolve_cli_path(root: Any, path: Sequence[str]) -> Any:
    """Walk the command groups from ``root`` along ``path``; the end must be a runnable command.

    ``root`` is what ``typer.main.get_command`` returns: a click command tree or, with a typer
    that vendors click as ``typer._click``, the same interface without click's classes. So the
    walk relies on that interface (``get_command``, ``list_commands``, ``context_class``), not
    on ``isinstance(..., click.Group)``.
    """
    command = root
    ctx = root.context_class(root, info_name="gridwatch")
    for depth, name in enumerate(path):
        where = " ".join(("gridwatch", *path[:depth]))
        if not _is_group(command):
            raise LookupError(f"`{where}` is a command, it has no subcommand {name!r}")
        sub = command.get_command(ctx, name)
        if sub is None:
            known = ", ".join(command.list_commands(ctx))
            raise LookupError(f"`{where}` has no subcommand {name!r} (it has: {known})")
        ctx = sub.context_class(sub, info_name=name, parent=ctx)
        command = sub
    if _is_group(command) and not getattr(command, "invoke_without_command", False):
        known = ", ".join(command.list_commands(ctx))
        raise LookupError(f"`gridwatch {' '.join(path)}` is a group, not a command ({known})")
    return command


def grafana_env_reference(value: object) -> str:
    """The variable a Grafana provisioning value takes from the environment."""
    match = re.fullmatch(
        r"\$(?:__env\{(?P<env>\w+)\}|\{(?P<braced>\w+)\}|(?P<bare>\w+))", str(value).strip()
    )
    assert match, f"{value!r} is not read from the environment ($VAR, ${{VAR}}, $__env{{VAR}})"
    return match["env"] or match["braced"] or match["bare"]


# --- the compose file -----------------------------------------------------------------------


def test_compose_file_parses_and_has_the_expected_services() -> None:
    assert "version" not in compose(), "the top-level `version` key is obsolete"
    missing = (INFRASTRUCTURE | set(ROLES)) - set(services())
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"


def test_gridwatch_roles_are_built_from_the_one_image() -> None:
    roles = role_services()
    assert set(roles) == set(ROLES), (
        "every service built from ./Dockerfile is a gridwatch role; add new roles to ROLES "
        f"(built: {sorted(roles)})"
    )
    images = {service.get("image") for service in roles.values()}
    builds = {yaml.safe_dump(service["build"]) for service in roles.values()}
    assert len(images) == 1 and None not in images, f"roles use several images: {images}"
    assert len(builds) == 1, "roles are built differently"
    build = next(iter(roles.values()))["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (ROOT / context).resolve() == ROOT
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_the_common_role_settings_come_from_one_anchor() -> None:
    anchor = compose().get("x-gridwatch")
    assert isinstance(anchor, dict), "the shared role settings live in `x-gridwatch`"
    for name in ROLES:
        service = services()[name]
        for key in ("image", "build"):
            assert service.get(key) == anchor.get(key), f"{name}.{key} differs from x-gridwatch"
        environment = service.get("environment", {})
        if name == "simulator":
            # Its own MQTT login; everything else as every role.
            environment = {**environment, **{k: anchor["environment"][k] for k in SIMULATOR_LOGIN}}
        assert environment.items() >= anchor["environment"].items(), (
            f"{name}.environment drops settings of x-gridwatch"
        )
        # Secrets belong to the role that uses them alone: the sink keys, CAP signing and the
        # callback address to the relay, the Grafana reader's password to db-init, and the
        # console's own addresses to the console.
        assert name in SECRET_HOLDERS or environment == anchor["environment"], name
        assert set(environment) - set(anchor["environment"]) <= SECRET_HOLDERS.get(name, set())


def test_the_simulator_has_its_own_mqtt_login() -> None:
    simulator = interpolated_environment(services()["simulator"])
    bridge = interpolated_environment(services()["ingest-mqtt"])
    assert set(SIMULATOR_LOGIN) == {k for k in simulator if simulator[k] != bridge[k]}
    assert urlsplit(simulator["GRIDWATCH_MQTT_URL"]).username == SIMULATOR_USER
    assert simulator["GRIDWATCH_MQTT_PASSWORD"] == env_example()["MQTT_SIM_PASSWORD"]


def test_every_depends_on_target_exists_with_the_right_condition() -> None:
    for name, service in services().items():
        for target, spec in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            condition = spec.get("condition", "service_started")
            other = services()[target]
            if target in ONE_SHOT:
                expected = "service_completed_successfully"
            elif "healthcheck" in other and not other["healthcheck"].get("disable"):
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert condition == expected, f"{name} -> {target}: {condition}, want {expected}"
            if "profiles" not in service:
                assert "profiles" not in other, (
                    f"{name} always starts but depends on {target}, which only starts in a profile"
                )


def test_infrastructure_services_have_healthchecks() -> None:
    for name in INFRASTRUCTURE - ONE_SHOT:
        check = services()[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


def test_every_bind_mounted_host_path_exists() -> None:
    ignored = DOCKERIGNORE.read_text(encoding="utf-8").split()
    checked = 0
    for name, service in [*services().items(), ("x-gridwatch", compose()["x-gridwatch"])]:
        for mount in mounts(service):
            if mount["type"] != "bind":
                continue
            source = bind_source(mount)
            assert source.is_relative_to(ROOT), f"{name}: {mount['source']} is outside the repo"
            relative = source.relative_to(ROOT).as_posix()
            checked += 1
            if relative in OPERATOR_PROVIDED:
                # Missing, it must fail loudly instead of becoming an empty directory, and it
                # must never reach an image.
                assert mount.get("bind", {}).get("create_host_path") is False, (
                    f"{name}: {relative} needs `bind: {{create_host_path: false}}`"
                )
                assert mount.get("read_only"), f"{name}: mount {relative} read-only"
                assert any(relative == i or relative.startswith(i + "/") for i in ignored), (
                    f"{relative} must be listed in .dockerignore"
                )
                continue
            assert source.exists(), f"{name}: bind-mounted {mount['source']} does not exist"
    assert checked, "no bind mounts found: the parser is wrong"


def test_every_compose_variable_is_listed_in_env_example() -> None:
    used = set().union(*(references(text) for text in strings(compose())))
    missing = used - set(env_example())
    assert not missing, f"add to .env.example: {sorted(missing)}"
    unused = set(env_example()) - used
    assert not unused, f".env.example lists variables the compose file never uses: {unused}"


def test_env_example_holds_placeholders_not_secrets() -> None:
    for name, value in env_example().items():
        if _SECRET_NAME.search(name):
            assert value.startswith("change-me"), f".env.example {name}: use a change-me value"
        if name.startswith("GRIDWATCH_"):
            field = name.removeprefix("GRIDWATCH_").lower()
            assert field in Settings.model_fields, f".env.example {name}: not a Settings field"


def test_secrets_are_required_not_defaulted() -> None:
    """A secret the stack needs has no default: compose refuses to start without it."""
    for text in strings(compose()):
        for match in _VARIABLE.finditer(text):
            name = match["braced"] or match["bare"]
            if match["escaped"] or not name or not _SECRET_NAME.search(name):
                continue
            assert match["op"] in {":?", "?"}, f"{match[0]}: write ${{{name}:?message}}"


def test_no_plaintext_password_in_the_compose_file() -> None:
    def without_references(text: str) -> str:
        return _VARIABLE.sub(lambda m: "$" if m["escaped"] else _REFERENCE, text)

    for name, service in [*services().items(), ("x-gridwatch", compose()["x-gridwatch"])]:
        for key, value in environment(service).items():
            if _SECRET_NAME.search(key):
                assert without_references(value).strip() == _REFERENCE, (
                    f"{name}: {key} must come from the environment, as ${{VAR:?message}}"
                )
    for text in strings(compose()):
        for match in _URL_USERINFO.finditer(without_references(text)):
            assert match["password"] == _REFERENCE, f"plaintext password in URL: {text!r}"
        for match in re.finditer(r"(?:^|\s)(?:-P|--pass(?:word)?)[\s=]+(\S+)", text):
            assert match[1].strip("'\"").startswith("$"), f"plaintext password in: {text!r}"


def test_gridwatch_variables_are_settings_fields() -> None:
    seen = set()
    for name, service in [*services().items(), ("x-gridwatch", compose()["x-gridwatch"])]:
        for key in environment(service):
            if key.startswith("GRIDWATCH_"):
                field = key.removeprefix("GRIDWATCH_").lower()
                assert field in Settings.model_fields, f"{name}: {key} is not a Settings field"
                seen.add(field)
    needed = {"database_url", "kafka_bootstrap", "mqtt_url", "mqtt_password", "site"}
    assert needed <= seen, f"roles are not configured with: {sorted(needed - seen)}"


def test_role_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ROLES:
        for key in list(os.environ):
            if key.startswith("GRIDWATCH_"):
                monkeypatch.delenv(key)
        for key, value in interpolated_environment(services()[name]).items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.database_url is not None, name
        assert settings.kafka_bootstrap and settings.mqtt_url and settings.mqtt_password, name
        site_file = mount_at(services()[name], settings.site.as_posix())
        assert site_file["type"] == "bind" and site_file["read_only"], name


def test_role_endpoints_point_at_the_stack() -> None:
    db_env = interpolated_environment(services()["timescaledb"])
    kafka_env = environment(services()["kafka"])
    mqtt_env = interpolated_environment(services()["mosquitto"])
    for name in ROLES:
        env = interpolated_environment(services()[name])

        db = urlsplit(env["GRIDWATCH_DATABASE_URL"])
        assert db.scheme in {"postgresql", "postgres"}, name
        assert (db.hostname, db.port) == ("timescaledb", 5432), name
        assert db.username == db_env["POSTGRES_USER"], name
        assert db.password == db_env["POSTGRES_PASSWORD"], name
        assert db.path.lstrip("/") == db_env["POSTGRES_DB"], name

        advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        internal = {listener.split("://", 1)[1] for listener in advertised}
        for server in env["GRIDWATCH_KAFKA_BOOTSTRAP"].split(","):
            assert server in internal, f"{name}: {server} is not an advertised listener"

        mqtt = urlsplit(env["GRIDWATCH_MQTT_URL"])
        assert (mqtt.scheme, mqtt.hostname, mqtt.port) == ("mqtts", "mosquitto", 8883), name
        if name == "simulator":
            continue  # its own login: test_the_simulator_has_its_own_mqtt_login
        ca = mount_at(services()[name], env["GRIDWATCH_MQTT_CA"])
        assert bind_source(ca) == ROOT / "deploy" / "mosquitto" / "certs" / "ca.crt", name
        assert mqtt.username == mqtt_env["MQTT_USERNAME"], name
        assert mqtt.password is None, f"{name}: the MQTT password goes in GRIDWATCH_MQTT_PASSWORD"
        assert env["GRIDWATCH_MQTT_PASSWORD"] == mqtt_env["MQTT_PASSWORD"], name


def test_simulator_runs_only_in_the_sim_profile() -> None:
    assert services()["simulator"].get("profiles") == ["sim"]
    for name, service in services().items():
        if name != "simulator":
            assert "profiles" not in service, f"{name} should always run"


# --- the gridwatch CLI behind each role -----------------------------------------------------


def test_role_commands_are_the_expected_cli_paths() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert scripts["scripts"].get("gridwatch") == "gridwatch.cli:app"
    assert image_entrypoint() == ["gridwatch"]
    for name, expected in ROLES.items():
        assert cli_path(services()[name]) == expected, name
    assert set(ROLES.values()) == EXPECTED_COMMANDS


def _stand_in_cli() -> typer.Typer:
    """A typer app with exactly the expected commands, to check the resolver itself."""

    def noop() -> None:
        """Do nothing."""

    app = typer.Typer()
    app.command("demo")(noop)
    groups: dict[str, typer.Typer] = {}
    for group, *command in sorted(EXPECTED_COMMANDS):
        sub = groups.setdefault(group, typer.Typer(invoke_without_command=not command))
        if command:
            sub.command(command[0])(noop)
        else:
            sub.callback()(noop)
    for group, sub in groups.items():
        app.add_typer(sub, name=group)
    return app


def test_the_cli_resolver_walks_typer_groups() -> None:
    root = typer.main.get_command(_stand_in_cli())
    for path in sorted(EXPECTED_COMMANDS):
        assert resolve_cli_path(root, path).name == path[-1]
    with pytest.raises(LookupError, match="no subcommand 'camera'"):
        resolve_cli_path(root, ("ingest", "camera"))
    with pytest.raises(LookupError, match="is a group"):
        resolve_cli_path(root, ("ingest",))
    with pytest.raises(LookupError, match="is a command"):
        resolve_cli_path(root, ("demo", "now"))


def test_role_commands_exist_in_the_cli() -> None:
    from gridwatch.cli import app

    root = typer.main.get_command(app)
    for name in ROLES:
        path = cli_path(services()[name])
        try:
            resolve_cli_path(root, path)
        except LookupError as err:
            pytest.fail(f"service {name}: {err}")


# --- liveness and restarts -----------------------------------------------------------------


def long_running_roles() -> dict[str, dict[str, Any]]:
    return {
        name: role_services()[name]
        for name in ROLES
        if name != "simulator" and name not in ONE_SHOT
    }


def test_every_long_running_role_restarts_after_a_crash() -> None:
    for name, service in long_running_roles().items():
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, (
            f"{name}: a role that exits non-zero must be started again"
        )


def test_every_long_running_role_is_checked_by_its_own_heartbeat() -> None:
    from gridwatch.cli import app

    root = typer.main.get_command(app)
    for name, service in long_running_roles().items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: use the exec form"
        argv = test[1:]
        assert argv[:3] == ["gridwatch", "health", name], (
            f"{name}: the healthcheck reads another role's heartbeat: {argv}"
        )
        resolve_cli_path(root, ("health",))
        max_age = float(argv[argv.index("--max-age") + 1])
        interval = _seconds(check["interval"])
        assert interval < max_age, f"{name}: checked less often than it may stay silent"
        assert _seconds(check["timeout"]) < interval, f"{name}: a check outlives its interval"
        assert check.get("retries", 3) >= 2, f"{name}: one slow check must not mark it unhealthy"
        assert _seconds(check.get("start_period", "0s")) >= max_age, (
            f"{name}: the first heartbeat may take a start-up (loading the site, joining groups)"
        )
    env = interpolated_environment(compose()["x-gridwatch"])
    assert env["GRIDWATCH_LIVENESS_DIR"].startswith("/var/lib/gridwatch/"), (
        "heartbeats go where the image's user may write"
    )


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    assert match, f"not a compose duration: {duration!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


# --- Kafka, TimescaleDB, Mosquitto ----------------------------------------------------------


def test_kafka_is_a_single_kraft_node_without_topic_auto_creation() -> None:
    env = environment(services()["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert f"{controller}://" not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env.get("CLUSTER_ID"), "KRaft storage is formatted with a fixed cluster id"
    assert "kafka-broker-api-versions" in str(services()["kafka"]["healthcheck"]["test"])


def test_kafka_init_creates_every_topic() -> None:
    init = services()["kafka-init"]
    assert init["image"] == services()["kafka"]["image"]
    assert init.get("restart", "no") == "no"
    assert set(environment(init)["TOPICS"].split()) == set(topics.ALL)
    script = " ".join(strings(init.get("command"))) + " ".join(strings(init.get("entrypoint")))
    assert "kafka-topics.sh" in script and "--create" in script and "--if-not-exists" in script
    assert "$${TOPICS}" in script and "--bootstrap-server kafka:9092" in script


def test_timescaledb_requires_a_password_and_checks_readiness() -> None:
    db = services()["timescaledb"]
    assert db["image"].startswith("timescale/timescaledb:")
    env = environment(db)
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "pg_isready" in str(db["healthcheck"]["test"])
    assert any(m["target"] == "/var/lib/postgresql/data" for m in mounts(db)), "no data volume"


def _mosquitto_conf() -> dict[str, list[str]]:
    conf: dict[str, list[str]] = {}
    for raw in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf.setdefault(key, []).append(value.strip())
    return conf


def test_mosquitto_requires_tls_a_password_file_and_an_acl() -> None:
    conf = _mosquitto_conf()
    broker = services()["mosquitto"]
    # TLS for everyone; plain MQTT only on the container's loopback, for the healthcheck.
    assert conf["listener"] == ["1883 127.0.0.1", "8883"]
    assert conf["per_listener_settings"] == ["false"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["persistence"] == ["true"]
    assert conf["tls_version"] == ["tlsv1.2"]
    assert int(conf["max_packet_size"][0]) > 0, "a message size limit"
    for key in ("password_file", "acl_file", "cafile", "certfile", "keyfile"):
        [path] = conf[key]
        found = [
            m for m in mounts(broker) if path == m["target"] or path.startswith(m["target"] + "/")
        ]
        assert len(found) == 1 and found[0]["read_only"], f"{key} {path} is not mounted read-only"
    assert bind_source(mount_at(broker, conf["password_file"][0])) == MOSQUITTO_DIR / "passwd"
    assert bind_source(mount_at(broker, conf["acl_file"][0])) == MOSQUITTO_DIR / "acl"
    assert bind_source(mount_at(broker, "/mosquitto/config/certs")) == MOSQUITTO_DIR / "certs"
    assert bind_source(mount_at(broker, "/mosquitto/config/mosquitto.conf")) == MOSQUITTO_CONF
    [data] = conf["persistence_location"]
    mount_at(broker, data.rstrip("/"))
    published = " ".join(str(port) for port in broker.get("ports", []))
    assert "8883" in published and "1883" not in published, "publish the TLS port only"
    check = " ".join(strings(broker["healthcheck"]["test"]))
    assert "-h 127.0.0.1 -p 1883" in check, "the healthcheck uses the loopback listener"


def test_the_acl_lets_a_device_publish_only_under_its_own_id() -> None:
    lines = [
        line.split()
        for line in (MOSQUITTO_DIR / "acl").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    patterns = [line[1:] for line in lines if line[0] == "pattern"]
    assert patterns == [["write", "gw/+/%u/telemetry"], ["write", "gw/+/%u/status"]]
    users = {line[1]: i for i, line in enumerate(lines) if line[0] == "user"}
    pipeline = interpolated_environment(services()["mosquitto"])["MQTT_USERNAME"]
    assert set(users) == {pipeline, SIMULATOR_USER}
    starts = sorted(users.values())

    def topics_of(user: str) -> list[list[str]]:
        start = users[user]
        end = next((i for i in starts if i > start), len(lines))
        return [line[1:] for line in lines[start + 1 : end] if line[0] == "topic"]

    assert topics_of(pipeline) == [["read", "gw/#"], ["read", "$SYS/broker/version"]]
    assert topics_of(SIMULATOR_USER) == [["write", "gw/#"]]
    assert not any(line[-1] == "#" for line in lines), "nobody subscribes to #"


# --- Grafana --------------------------------------------------------------------------------


def test_grafana_admin_password_comes_from_the_environment() -> None:
    env = environment(services()["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    grafana = services()["grafana"]
    provisioning = mount_at(grafana, PROVISIONING_IN_GRAFANA)
    assert bind_source(provisioning) == ROOT / "dashboards" / "provisioning"
    assert provisioning["read_only"]


def test_grafana_datasource_is_the_gridwatch_database_read_only() -> None:
    document = yaml.safe_load(GRAFANA_DATASOURCES.read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    [source] = [ds for ds in document["datasources"] if ds.get("uid") == DATASOURCE_UID]
    assert source["type"] in {"grafana-postgresql-datasource", "postgres"}
    assert source["url"] == "timescaledb:5432"
    json_data = source["jsonData"]
    assert json_data["timescaledb"] is True

    grafana_env = interpolated_environment(services()["grafana"])
    db_env = interpolated_environment(services()["timescaledb"])
    granted = interpolated_environment(services()["db-init"])
    wanted = {
        "user": (source.get("user"), DEFAULT_READER),
        "database": (json_data.get("database", source.get("database")), db_env["POSTGRES_DB"]),
        "password": (source["secureJsonData"]["password"], granted["GRIDWATCH_READER_PASSWORD"]),
    }
    for what, (value, expected) in wanted.items():
        variable = grafana_env_reference(value) if "$" in str(value) else None
        if variable is None:
            assert what != "password", "the datasource password must come from the environment"
            assert value == expected, f"datasource {what}: {value!r}, want {expected!r}"
            continue
        assert variable in grafana_env, f"grafana service does not set {variable} ({what})"
        assert grafana_env[variable] == expected, f"datasource {what} is not the reader's"
    assert DEFAULT_READER != db_env["POSTGRES_USER"], "Grafana must not log in as the superuser"
    raw_grafana_env = environment(services()["grafana"])
    assert "POSTGRES_PASSWORD" not in " ".join(raw_grafana_env.values()), (
        "Grafana must not know the superuser's password"
    )


def test_grafana_starts_after_its_read_only_role_exists() -> None:
    init = services()["db-init"]
    assert cli_path(init) == ("store", "grant-reader") and "--user" not in str(init["command"])
    assert init.get("restart") == "no"
    assert depends_on(services()["grafana"])["db-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_grafana_loads_dashboards_from_the_repository() -> None:
    document = yaml.safe_load(GRAFANA_DASHBOARDS.read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_IN_GRAFANA
    dashboards = mount_at(services()["grafana"], DASHBOARDS_IN_GRAFANA)
    assert bind_source(dashboards) == ROOT / "dashboards" / "json"
    assert (ROOT / "dashboards" / "json").is_dir()
    assert dashboards["read_only"]
    maps = mount_at(services()["grafana"], GRAFANA_MAPS)
    assert bind_source(maps) == ROOT / "dashboards" / "geo" and maps["read_only"]
    for document in (ROOT / "dashboards" / "json").glob("*.json"):
        for panel in json.loads(document.read_text(encoding="utf-8"))["panels"]:
            for layer in (panel.get("options") or {}).get("layers", []):
                if layer["type"] == "geojson":
                    src = layer["config"]["src"]
                    assert src.startswith(MAPS_URL), src
                    served = ROOT / "dashboards" / "geo" / src.removeprefix(MAPS_URL)
                    assert served.is_file(), f"{document.name} draws {src}, which is not mounted"


# --- the image ------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_gridwatch_image() -> None:
    instructions = dockerfile_instructions()
    args = {
        name: default
        for op, rest in instructions
        if op == "ARG"
        for name, _, default in [rest.partition("=")]
    }
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert stages, "no FROM"
    for index in stages:
        base = interpolate(instructions[index][1].split()[0], args)
        assert base in {"python:3.11-slim"} or base.startswith("python:3.11-slim@"), base
    final = instructions[stages[-1] :]
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "install the project with `pip install .`"
    assert "[embedded]" not in runs and "[dev]" not in runs, "production installs no extras"
    assert image_entrypoint() == ["gridwatch"]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set(DOCKERIGNORE.read_text(encoding="utf-8").split())
    for entry in (".env", ".git", ".venv", "deploy/mosquitto/passwd"):
        assert entry in ignored, f".dockerignore should list {entry}"
    for needed in ("pyproject.toml", "gridwatch", "README.md"):
        assert needed not in ignored, f".dockerignore excludes {needed}, which the build needs"


# --- docker compose itself, when its CLI is installed ---------------------------------------


def _compose_cli() -> list[str] | None:
    """`docker compose` (the plugin), else a standalone Compose v2+ `docker-compose`."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    candidates = [
        shutil.which("docker-compose"),
        str(Path(sys.executable).with_name("docker-compose")),
    ]
    for candidate in candidates:
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "version", "--short"], capture_output=True, text=True, timeout=60
        )
        major = probe.stdout.strip().lstrip("v").split(".")[0]
        if probe.returncode == 0 and major.isdigit() and int(major) >= 2:
            return [candidate]
    return None


def _run_compose(cli: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    # Only the env file decides the variables: none leak in from the caller's shell.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in env_example() and not key.startswith(("COMPOSE_", "GRIDWATCH_"))
    }
    command = [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    command += ["--env-file", str(env_file), "config", "-q"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_docker_compose_config_accepts_the_stack(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose CLI (neither the `docker compose` plugin nor a v2 "
            "`docker-compose` binary) is installed; the static checks above still ran"
        )
    accepted = _run_compose(cli, ENV_EXAMPLE)
    assert accepted.returncode == 0, accepted.stderr

    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    refused = _run_compose(cli, empty)
    assert refused.returncode != 0, "compose must refuse to start without the secrets"
    for name in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "MQTT_PASSWORD"):
        assert name in refused.stderr, f"no error about the missing {name}"
