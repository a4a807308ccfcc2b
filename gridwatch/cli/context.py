"""What every role sets up before its work: ``role_context()``, the one composition root."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import psycopg

from gridwatch.cli.common import all_topics, fail, required_services, setup_logging, site_or_fail
from gridwatch.liveness import MAIN_LOOP, Heartbeat
from gridwatch.services import ServiceUrls, create_topics
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema


@dataclass
class RoleContext:
    """A role's settings, its services' URLs, its site and its liveness heartbeat.

    Building one reads configuration only; ``prepare`` is the first touch of a service, so a
    role can refuse a bad configuration of its own (a placeholder key) before that."""

    settings: Settings
    kafka_bootstrap: str
    services: ServiceUrls | None  # None for a role that needs Kafka only
    heartbeat: Heartbeat

    @cached_property
    def site(self) -> Site:
        """Loaded on first use: a role that never reads the site never pays for a large one."""
        return site_or_fail(self.settings)

    @property
    def urls(self) -> ServiceUrls:
        if self.services is None:
            raise fail("this command was set up for Kafka only")
        return self.services

    def prepare(self, *, schema: bool = False) -> RoleContext:
        """Create the topics (and with ``schema`` the tables) the role reads and writes."""
        create_topics(self.kafka_bootstrap, all_topics(), self.settings.topic_partitions)
        if schema:
            with psycopg.connect(self.urls.database_url) as conn:
                ensure_schema(conn)
        return self


def role_context(
    role: str,
    *,
    kafka_only: bool = False,
    loops: Iterable[str] = (MAIN_LOOP,),
    settings: Settings | None = None,
) -> RoleContext:
    """Settings from the environment, logging to stderr, the configured services and the
    role's heartbeat under ``settings.liveness_dir`` (touched once each of ``loops`` has
    beaten). A missing service URL stops the command with what to set."""
    settings = settings or Settings()
    setup_logging(settings)
    if kafka_only:
        if settings.kafka_bootstrap is None:
            raise fail("set GRIDWATCH_KAFKA_BOOTSTRAP")
        services, bootstrap = None, settings.kafka_bootstrap
    else:
        services = required_services(settings)
        bootstrap = services.kafka_bootstrap
    return RoleContext(
        settings=settings,
        kafka_bootstrap=bootstrap,
        services=services,
        heartbeat=Heartbeat(settings.liveness_dir, role, loops=loops),
    )
