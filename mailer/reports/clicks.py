"""An issue's own click and open figures (mailer/send/tracking.py's counts), for every surface.

`tracked(conn, send_ids)` sums the sends of an issue: people who clicked (distinct copies with a
person's click), machine clicks (requests counted as machines'), opens and machine opens, and each
link with the people who clicked it and its machine requests, most people first. None when none of
the sends was tracked, so a surface can fall back on the provider's events. An issue sent to two
lists has its links listed once per URL, their counts summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from mailer.send.tracking import send_links, send_tracking

OPENS_NOTE = ("Opens are a lower bound at best: many mail programs do not load images, and the "
              "image proxies of Apple and Google load them for nobody in particular (counted apart).")


@dataclass(frozen=True)
class LinkFigures:
    url: str
    text: str                      # the words it is written under in the issue
    people: int
    machine: int

    def as_dict(self) -> dict:
        return {"url": self.url, "text": self.text, "people": self.people, "machine": self.machine}


@dataclass(frozen=True)
class Tracked:
    clicks: int = 0
    machine_clicks: int = 0
    opens: int = 0
    machine_opens: int = 0
    links: list[LinkFigures] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {"clicks": self.clicks, "machine_clicks": self.machine_clicks, "opens": self.opens,
                "machine_opens": self.machine_opens}


def tracked(conn, send_ids: list[int]) -> Tracked | None:
    """The sends' own tracking figures, or None when none of them was tracked."""
    t = send_tracking.c
    row = conn.execute(select(func.count(), func.sum(t.clicks), func.sum(t.machine_clicks), func.sum(t.opens),
                              func.sum(t.machine_opens)).where(t.send_id.in_(send_ids))).one()
    if not row[0]:
        return None
    links: dict[str, list] = {}
    for url, text, people, machine in conn.execute(
            select(send_links.c.url, send_links.c.text, send_links.c.people, send_links.c.machine)
            .where(send_links.c.send_id.in_(send_ids)).order_by(send_links.c.send_id, send_links.c.idx)):
        kept = links.setdefault(url, [text, 0, 0])
        kept[1] += people
        kept[2] += machine
    ordered = sorted(links.items(), key=lambda item: (-item[1][1], -item[1][2]))   # stable: issue order breaks ties
    return Tracked(int(row[1] or 0), int(row[2] or 0), int(row[3] or 0), int(row[4] or 0),
                   [LinkFigures(url, text, people, machine) for url, (text, people, machine) in ordered])
