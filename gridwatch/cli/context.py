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
    """A role's settings, its liveness heartbeat, and on first use its site and services.

    Nothing is read or checked before the role asks for it: a camera worker needs Kafka only,
    the store writer no site, and the relay refuses a placeholder key before any URL is looked
    at. ``prepare`` is the first touch of a service."""

    settings: Settings
    heartbeat: Heartbeat

    @cached_property
    def site(self) -> Site:
        return site_or_fail(self.settings)

    @cached_property
    def urls(self) -> ServiceUrls:
        """The database, Kafka and MQTT URLs; a missing one stops the role with what to set."""
        return required_services(self.settings)

    @property
    def kafka_bootstrap(self) -> str:
        if self.settings.kafka_bootstrap is None:
            raise fail("set GRIDWATCH_KAFKA_BOOTSTRAP")
        return self.settings.kafka_bootstrap

    def prepare(self, *, schema: bool = False) -> RoleContext:
        """Create the topics (and with ``schema`` the tables) the role reads and writes."""
        database_url = self.urls.database_url if schema else None  # every URL checked first
        create_topics(self.kafka_bootstrap, all_topics(), self.settings.topic_partitions)
        if database_url is not None:
            with psycopg.connect(database_url) as conn:
                ensure_schema(conn)
        return self


def role_context(
    role: str, *, loops: Iterable[str] = (MAIN_LOOP,), settings: Settings | None = None
) -> RoleContext:
    """Settings from the environment, logging to stderr, and the role's heartbeat under
    ``settings.liveness_dir``, touched once each of ``loops`` has beaten."""
    settings = settings or Settings()
    setup_logging(settings)
    return RoleContext(settings, Heartbeat(settings.liveness_dir, role, loops=loops))
