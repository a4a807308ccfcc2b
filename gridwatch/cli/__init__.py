"""The ``gridwatch`` command: the one place that wires the packages together.

``gridwatch demo`` runs every role in one process on embedded services; in production each role
runs as its own process (``gridwatch ingest mqtt``, ``gridwatch streams worker``, …).
"""

from gridwatch.cli import (  # noqa: F401 - importing registers the commands
    demo,
    duty_console,
    feedback,
    recordings,
    roles,
    scenarios,
    tools,
)
from gridwatch.cli.common import app

__all__ = ["app"]
