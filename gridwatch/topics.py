"""Kafka topic names (DESIGN.md §2) and the event model each one carries."""

from __future__ import annotations

from gridwatch.events import (
    Alert,
    CaseEvent,
    DeadLetter,
    Detection,
    DeviceStatus,
    Event,
    Incident,
    ReadingBatch,
)

READINGS = "gw.readings"
DETECTIONS = "gw.detections"
INCIDENTS = "gw.incidents"
ALERTS = "gw.alerts"
CASE_EVENTS = "gw.case-events"
DEADLETTER = "gw.deadletter"
DEVICE_STATUS = "gw.device-status"

MODELS: dict[str, type[Event]] = {
    READINGS: ReadingBatch,
    DETECTIONS: Detection,
    INCIDENTS: Incident,
    ALERTS: Alert,
    CASE_EVENTS: CaseEvent,
    DEADLETTER: DeadLetter,
    DEVICE_STATUS: DeviceStatus,
}
ALL = tuple(MODELS)


def mqtt_telemetry(street: str, device_id: str) -> str:
    return f"gw/{street}/{device_id}/telemetry"


def mqtt_status(street: str, device_id: str) -> str:
    return f"gw/{street}/{device_id}/status"
