"""The alert engine: graded incidents in, deduplicated alerts out (Alertmanager semantics).

One fingerprint per incident; a new alert message only when its level or state changes, and a
"resolved" whenever a firing incident ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

from kafka import KafkaProducer

from alerts.grading import Grader
from gridwatch import kafka, topics
from gridwatch.errors import PayloadError
from gridwatch.events import Alert, DeadLetter, Incident, Level, decode
from gridwatch.site import Site

log = logging.getLogger(__name__)

KIND_LABEL = {
    "forest_fire": "森林火情",
    "straw_burning": "秸秆焚烧",
    "illegal_construction": "违法建设",
    "flood": "防汛风险",
    "device_fault": "设备故障",
}
LEVEL_LABEL = {Level.YELLOW: "黄色预警", Level.ORANGE: "橙色预警", Level.RED: "红色预警"}


def fingerprint(incident: Incident) -> str:
    return hashlib.sha256(f"{incident.kind.value}|{incident.id}".encode()).hexdigest()[:16]


@dataclass
class AlertEngine:
    site: Site
    grader: Grader = field(init=False)
    _sent: dict[str, tuple[Level, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.grader = Grader(self.site)

    def on_incident(self, incident: Incident) -> Alert | None:
        """The alert to send for this incident revision, or None if it would repeat itself."""
        fp = fingerprint(incident)
        grade = self.grader.grade(incident)
        state = "resolved" if incident.ended else "firing"
        last = self._sent.get(fp)
        if last == (grade.level, state) or (last is None and state == "resolved"):
            return None
        self._sent[fp] = (grade.level, state)
        return Alert(
            fingerprint=fp,
            incident_id=incident.id,
            incident_revision=incident.revision,
            kind=incident.kind,
            level=grade.level,
            state=state,
            targets=self.grader.targets(incident, grade.level),
            summary=_summary(incident, grade.level, state),
            location=incident.location,
            grid_code=incident.grid_code,
            ts=incident.last_seen,
            reasons=grade.reasons,
        )


def _summary(incident: Incident, level: Level, state: str) -> str:
    what = KIND_LABEL.get(incident.kind.value, incident.kind.value)
    done = "（已解除）" if state == "resolved" else ""
    return f"{LEVEL_LABEL[level]}：{what}，网格 {incident.grid_code}{done}"


async def run_engine(
    site: Site,
    bootstrap: str,
    producer: KafkaProducer,
    stop: asyncio.Event,
    group_id: str = "gridwatch-alerts",
    ready: asyncio.Event | None = None,
) -> None:
    """Consume incidents until ``stop`` is set; commit only after the alerts are in Kafka.
    ``ready`` is set once partitions are assigned."""
    engine = AlertEngine(site)
    consumer = kafka.consumer(bootstrap, group_id, topics.INCIDENTS)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if ready is not None and consumer.assignment():
                ready.set()
            for records in batches.values():
                for record in records:
                    raw = record.value or b""
                    try:
                        alert = engine.on_incident(decode(Incident, raw))
                    except PayloadError as err:
                        letter = DeadLetter.of(f"kafka:{topics.INCIDENTS}", raw, str(err))
                        producer.send(topics.DEADLETTER, value=letter.to_bytes())
                        continue
                    if alert is not None:
                        log.info("alert %s %s %s", alert.fingerprint, alert.level, alert.state)
                        producer.send(
                            topics.ALERTS, key=alert.fingerprint.encode(), value=alert.to_bytes()
                        )
            if batches:
                await asyncio.to_thread(producer.flush)
                await consumer.commit()
    finally:
        await consumer.stop()
