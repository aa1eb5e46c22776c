"""The monthly schedule: an issue file -> sent on its slot, once (scheduler), the slots across
DST (slots), and each issue's state (states).

APScheduler's job store keeps each job's function as a text path. Jobs stored before the stages
became packages name `mailer.schedule:slot_job` and `mailer.schedule:tick_job`; they resolve here,
so a slot missed across the upgrade still runs.
"""


def __getattr__(name: str):
    if name in ("slot_job", "tick_job"):
        from mailer.schedule import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module 'mailer.schedule' has no attribute {name!r}")
