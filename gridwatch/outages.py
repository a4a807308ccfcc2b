"""Which failures are the infrastructure's, not the message's.

A role's per-message guard dead-letters a message whose handling fails, and moves on. A
database or broker that is unavailable is no fault of the message: it must not be
dead-lettered, but held and retried, or the role stops with its offset uncommitted and the
supervisor restarts it. This is the one place that tells the two apart.
"""

from __future__ import annotations

import aiokafka.errors
import kafka.errors
import psycopg

OUTAGES: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost or refused, server shutting down, out of resources
    psycopg.InterfaceError,  # the connection was closed under the client
    kafka.errors.KafkaError,
    aiokafka.errors.KafkaError,
    ConnectionError,
)


def is_outage(err: BaseException) -> bool:
    """The failure says nothing about the message: the service it needed was unavailable."""
    return isinstance(err, OUTAGES)
