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

from gridwatch.kafka import servers
from gridwatch.liveness import Heartbeat
from gridwatch.settings import ConsumerGroups, TableStore
from gridwatch.site import Site
from streams import stores
from streams.context import StreamContext
from streams.fusion_agents import register_fusion
from streams.sensor_agents import register_sensor_rules
from streams.transport import PRODUCER_MAX_BATCH_BYTES, Transport


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
    partitions: int = 1,
    store: TableStore = "memory",
    groups: ConsumerGroups | None = None,
    one_record_per_batch: bool = False,
) -> faust.App:
    """The app on every server of ``bootstrap``. Its own topics (the tables' changelogs, the
    placed detections) get the source topics' ``partitions``: Faust assigns a table's changelog
    partition with the source partition of the same number, so the counts must agree for
    several workers to share the partitions. ``one_record_per_batch``: see
    ``Settings.streams_one_record_per_batch``."""
    groups = groups or ConsumerGroups()
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in servers(bootstrap)],
        store=stores.URLS[store],
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset=offset_reset,
        broker_rebalance_timeout=groups.rebalance_timeout_s,
        broker_session_timeout=groups.session_timeout_s,
        broker_heartbeat_interval=groups.heartbeat_interval_s,
        producer_acks=-1,
        # aiokafka closes a batch once it is over the size, so 1 byte is one record a batch.
        producer_max_batch_size=1 if one_record_per_batch else PRODUCER_MAX_BATCH_BYTES,
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
