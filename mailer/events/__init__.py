"""Stage 7: raw inbound signals -> [DeliveryEvent] (the type lives in subscribers.events)."""

from subscribers.events import DeliveryEvent, EventType, Severity

__all__ = ["DeliveryEvent", "EventType", "Severity"]
