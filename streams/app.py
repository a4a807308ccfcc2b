"""The Faust app: sensor rules on ``gw.readings`` and fusion of ``gw.detections`` into incidents.

Agents run with concurrency 1 and keep their state in changelogged tables, so a restarted
worker rebuilds it. A message that cannot be processed goes to ``gw.deadletter`` with the
reason; the agent carries on with the next one. An agent that crashes all the same stops the
worker (crash-only): Faust's default supervisor would restart the agent past the messages it
was holding, or leave the worker idling, while its process looked alive.
"""

from __future__ import annotations

from pathlib import Path

import faust
from mode import CrashingSupervisor

from gridwatch.liveness import Heartbeat
from gridwatch.site import Site
from streams.context import StreamContext
from streams.fusion_agents import register_fusion
from streams.sensor_agents import register_sensor_rules
from streams.transport import Transport


def build_app(
    site: Site,
    bootstrap: str,
    datadir: Path,
    *,
    app_id: str = "gridwatch-streams",
    heartbeat_check_s: float = 5.0,
    quiet_check_s: float = 30.0,
    offset_reset: str = "earliest",
    heartbeat: Heartbeat | None = None,
) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap.split(',')[0]}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset=offset_reset,
        # Short rebalance and session timeouts keep group joins quick on small clusters.
        broker_rebalance_timeout=3,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        producer_acks=-1,
        agent_supervisor=CrashingSupervisor,
    )
    app.transport = Transport(app.conf.broker_consumer, app)
    ctx = StreamContext(app, site)
    register_sensor_rules(ctx, heartbeat_check_s=heartbeat_check_s)
    register_fusion(ctx, quiet_check_s=quiet_check_s)
    if heartbeat is not None:
        beat = heartbeat.beat

        @app.timer(heartbeat.every_s)  # type: ignore[untyped-decorator]
        async def liveness() -> None:
            beat()  # on the event loop the agents run on: a stuck loop goes stale

    return app
