"""Alerts: events that need a trader (a halt, a stop that could not be placed, a model circuit...), stored once per
quiet period and sent through apprise (ALERT_URLS)."""

from app.services.alerts.center import AlertCenter
from app.services.alerts.events import NO_ALERTS, AlertEvent, AlertKind, AlertSink

__all__ = ["NO_ALERTS", "AlertCenter", "AlertEvent", "AlertKind", "AlertSink"]
