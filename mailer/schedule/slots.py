"""[schedule] -> the slots: the configured day and time, as aware datetimes, right across DST.

    trigger = slot_trigger(settings.schedule)     # CronTrigger(day="1st tue", hour=9, ...)
    next_slots(settings.schedule, now, 3)         # the next three, in the schedule's time zone
    last_slot(settings.schedule, now)             # the latest slot at or before now
    parse_at("2026-12-01 09:00", settings.schedule, now)   # --at: local unless it has an offset

APScheduler's CronTrigger computes wall-clock times in the time zone, so 09:00 stays 09:00 local
in winter and in summer (14:00 or 13:00 UTC in New York); docs/schedule.md says what happens to a
time that falls into a DST gap or fold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from mailer.config import ScheduleSettings
from mailer.errors import ConfigError, ScheduleError

LOOK_BACK = timedelta(days=400)   # last_slot searches this far back: any day expression fires in a year


def zone(schedule: ScheduleSettings) -> ZoneInfo:
    return ZoneInfo(schedule.timezone)


def slot_trigger(schedule: ScheduleSettings) -> CronTrigger:
    """The CronTrigger of the slot; a bad `day` expression is a ConfigError naming the key."""
    hour, minute = (int(part) for part in schedule.time.split(":"))
    try:
        return CronTrigger(day=schedule.day, hour=hour, minute=minute, second=0, timezone=zone(schedule))
    except ValueError as exc:
        raise ConfigError(f"[schedule] day {schedule.day!r} is not an APScheduler day expression "
                          f"(e.g. \"1st tue\", \"last fri\", \"15\"): {exc}") from None


def next_slots(schedule: ScheduleSettings, after: datetime, count: int) -> list[datetime]:
    """The next `count` slots at or after `after`, in the schedule's time zone."""
    found: list[datetime] = []
    for slot in _slots(schedule, after):
        if len(found) == count:
            break
        found.append(slot)
    return found


def last_slot(schedule: ScheduleSettings, now: datetime) -> datetime | None:
    """The latest slot at or before `now`, or None if there was none in LOOK_BACK."""
    last = None
    for slot in _slots(schedule, now - LOOK_BACK):
        if slot > now:
            break
        last = slot
    return last


def _slots(schedule: ScheduleSettings, start: datetime):
    """The trigger's fire times from `start`, each wall time once: APScheduler 3.11 fires a time
    that the fall-back fold passes twice on both occasions, and a slot is one moment (docs/schedule.md)."""
    trigger, tz = slot_trigger(schedule), zone(schedule)
    slot = trigger.get_next_fire_time(None, start.astimezone(tz))
    while slot is not None:
        if not (slot.fold and slot.replace(fold=0).utcoffset() != slot.utcoffset()):
            yield slot.astimezone(UTC).astimezone(tz)  # a time in the spring gap, as the clock shows it
        slot = trigger.get_next_fire_time(slot, slot)


def parse_at(text: str, schedule: ScheduleSettings, now: datetime) -> datetime:
    """--at: ISO date and time ("2026-12-01 09:00", "2026-12-01T09:00-05:00", "...Z") -> aware UTC.

    Without an offset it is wall time in the schedule's time zone: a time the clocks skip (the
    spring-forward gap) is refused; a time they pass twice (the fall-back fold) is the first one."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"--at {text!r} is not a date and time like \"2026-12-01 09:00\" "
                            "(optionally with an offset, e.g. \"2026-12-01T09:00-05:00\")") from None
    if parsed.tzinfo is None:
        tz = zone(schedule)
        local = parsed.replace(tzinfo=tz)
        if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != parsed:
            raise ScheduleError(f"--at {text!r}: {parsed:%Y-%m-%d %H:%M} does not exist in {schedule.timezone} "
                                "(the clocks skip it for daylight saving time); pick another time")
        parsed = local
    when = parsed.astimezone(UTC)
    if when <= now:
        raise ScheduleError(f"--at {text!r} is in the past ({shown(when, schedule)})")
    return when


def shown(when: datetime, schedule: ScheduleSettings) -> str:
    """`2026-12-01 09:00 EST (2026-12-01 14:00 UTC)`: local wall time first, then UTC."""
    local, utc = when.astimezone(zone(schedule)), when.astimezone(UTC)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({utc:%Y-%m-%d %H:%M} UTC)"
