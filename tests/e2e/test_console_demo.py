"""The demo starts the duty officer's console and hands out a throwaway login, printed once."""

import re

import psycopg

from tests.conftest import DemoRun


def test_demo_prints_the_console_and_a_throwaway_duty_officer(demo_run: DemoRun) -> None:
    line = re.search(r"console (http://127\.0\.0\.1:\d+)\n\s+login (\S+) / (\S+)", demo_run.stdout)
    assert line, demo_run.stdout[-2000:]
    name, password = line.group(2), line.group(3)
    assert len(password) >= 12 and demo_run.stdout.count(password) == 1
    assert password not in (demo_run.run_dir / "gridwatch.log").read_text(encoding="utf-8")
    with psycopg.connect(demo_run.database_url) as conn:
        row = conn.execute(
            "SELECT role, password_hash FROM operators WHERE name = %s", (name,)
        ).fetchone()
    assert row is not None and row[0] == "duty_officer" and row[1].startswith("$argon2id$")
    assert password not in row[1]
