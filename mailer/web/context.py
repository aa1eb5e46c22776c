"""Web service: Settings -> what every route shares (pages, limiter, archive, database access).

Database work goes through `read` and `write`, each one transaction in the caller's thread.
SQLite allows one writer at a time and its busy handler sleeps in growing steps (up to 100 ms)
while it waits, which under a burst of one-click unsubscribes costs far more than the writes
themselves; so the web process queues its own writers on a lock, and retries the rare
"database is locked" that another process (a `mailer send`) can still cause. PostgreSQL writers
run side by side.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from mailer import engines
from mailer.config import check_templates, database_url, secret_key
from mailer.send.ledger import parse_ref, sends
from mailer.web.addresses import AddressRules
from mailer.web.archive import Archive
from mailer.web.challenge import Guard, spend
from mailer.web.ingest import ingest_events
from mailer.web.pages import Pages
from mailer.web.ratelimit import Rate, RateLimiter
from subscribers.models import lists

log = logging.getLogger("mailer.web")
LIST_CACHE_SECONDS = 60.0
SQLITE_RETRIES = 5


class WebContext:
    def __init__(self, settings) -> None:
        self.settings = settings
        n = settings.newsletter
        self.secret = secret_key(settings)  # tokens: fail at start
        check_templates(settings)            # a missing folder: a config error at start, not a 500 a page
        self.guard = Guard(settings, self.secret, spend=lambda signature, until: self.write(spend, signature, until))
        self.addresses = AddressRules.from_settings(settings)
        self.pages = Pages(settings.compose.templates_dir, newsletter_name=n.name, base_url=n.base_url,
                           postal_address=n.postal_address, language=n.language,
                           signup_challenge=settings.web.signup_challenge, form_started=self.guard.started)
        per_ip = Rate(burst=settings.web.subscribe_burst, per_hour=settings.web.subscribe_per_hour)
        self.limiter = RateLimiter({"subscribe": per_ip, "preferences": per_ip})  # fresh links: same rate
        self.api_limiter: RateLimiter | None = None   # per API token, made at the first request (mailer/web/api.py)
        self.archive = Archive(settings, read=self.read)
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._writer: AbstractContextManager = nullcontext()
        self._lists: dict[int, tuple[float, tuple[str, str, str | None] | None]] = {}
        self.batch = GroupWriter(self)
        self._send_lists: dict[int, int] = {}

    @property
    def engine(self) -> Engine:
        return self._opened()[0]

    def _opened(self) -> tuple[Engine, AbstractContextManager]:
        """The engine, made on first use, and the writer lock that goes with its database."""
        with self._lock:
            if self._engine is None:
                self._engine = engines.get(database_url(self.settings))   # the store's tables, then the send ledger
                self._writer = threading.Lock() if self._engine.dialect.name == "sqlite" else nullcontext()
            return self._engine, self._writer

    def read(self, fn, *args, **kwargs):
        with self.engine.connect() as conn:
            return fn(conn, *args, **kwargs)

    def write(self, fn, *args, **kwargs):
        """fn(conn, ...) in one transaction, committed when it returns."""
        engine, writer = self._opened()
        for attempt in range(SQLITE_RETRIES):
            try:
                with writer, engine.begin() as conn:
                    return fn(conn, *args, **kwargs)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == SQLITE_RETRIES - 1:
                    raise
                log.warning("database locked by another process; retrying")
                time.sleep(0.05 * (attempt + 1))

    def can_write(self) -> None:
        """Raise (OperationalError) unless the database takes a write now (/healthz). SQLite: one
        page rewritten and committed (`PRAGMA user_version` set to itself, a value nothing else
        uses), so a full disk or a file that cannot grow fails here as it would for an unsubscribe;
        a rolled-back write would never reach the disk. PostgreSQL: an UPDATE of no row, rolled
        back, which the server refuses when it takes no writes (read-only, as an operator sets it
        when its disk fills; a standby; a database refusing new transactions)."""
        engine, writer = self._opened()
        if engine.dialect.name == "sqlite":
            with writer, engine.connect() as conn:
                version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
                conn.exec_driver_sql(f"PRAGMA user_version = {version}")   # an int: nothing to quote
                conn.commit()
            return
        with engine.connect() as conn, conn.begin() as tx:
            conn.exec_driver_sql("UPDATE lists SET id = id WHERE false")
            tx.rollback()

    def exclusive(self):
        """This process's writer lock (SQLite) for work that opens its own transactions, such as
        an import: held, no other write of this process starts."""
        return self._opened()[1]

    def list_info(self, conn, list_id: int) -> tuple[str, str, str | None] | None:
        """(name, title, language) of a list, cached a minute: every unsubscribe page names its
        list, in its language."""
        hit = self._lists.get(list_id)
        if hit and time.monotonic() - hit[0] < LIST_CACHE_SECONDS:
            return hit[1]
        row = conn.execute(select(lists.c.name, lists.c.title, lists.c.language).where(lists.c.id == list_id)).first()
        info = (row.name, row.title or row.name, row.language) if row else None
        self._lists[list_id] = (time.monotonic(), info)
        return info

    def ingest(self, events) -> dict:
        """Store verified events once and apply subscribers.policy (runs in a worker thread)."""
        return ingest_events(self, events, self.settings.bounces.limits(), list_for=self.list_for)

    def list_for(self, conn, event):
        """The list a message was sent for: its delivery ref (custom_args `mailer_ref`, made by
        mailer.send.ledger.delivery_ref) names the send, the send its list. None when unknown."""
        ref = parse_ref(event.send_ref or "")
        if ref is None:
            return None
        send_id = ref[0]
        if send_id not in self._send_lists:
            found = conn.execute(select(sends.c.list_id).where(sends.c.id == send_id)).scalar()
            if found is None:
                return None       # not remembered: the send may be created after this event came
            self._send_lists[send_id] = found
        return self._send_lists[send_id]

    def close(self) -> None:
        self.batch.stop()
        engines.dispose_all()   # the service's Engine, and the one the admin's scheduling shares


class GroupWriter:
    """One thread applies the queued writes, as many as are waiting, in one transaction.

    A group commit: under a burst of one-click unsubscribes, many share one BEGIN/COMMIT (one
    WAL flush on PostgreSQL) instead of each waiting for its own, so the line never grows long.
    When a batch fails, its writes are retried one by one, so one bad write fails alone.
    """

    MAX_BATCH = 200

    def __init__(self, web: WebContext) -> None:
        self.web = web
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, fn, *args) -> Future:
        """Queue fn(conn, *args); the Future holds its result once committed."""
        future: Future = Future()
        self.queue.put((fn, args, future))
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="mailer-web-writer", daemon=True)
                self.thread.start()
        return future

    def stop(self) -> None:
        with self.lock:
            if self.thread is not None:
                self.queue.put(None)
                self.thread.join(10)
                self.thread = None

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)
                    break
                batch.append(more)
            self._apply(batch)

    def _apply(self, batch) -> None:
        try:
            results = self.web.write(_run_all, batch)
        except Exception:  # noqa: BLE001 - find the culprit: each write alone
            if len(batch) == 1:
                fn, args, future = batch[0]
                return self._settle(future, fn, args)
            for fn, args, future in batch:
                self._settle(future, fn, args)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _settle(self, future: Future, fn, args) -> None:
        try:
            future.set_result(self.web.write(fn, *args))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            future.set_exception(exc)


_MANY: dict[Callable, Callable] = {}


def batched(fn: Callable, many: Callable) -> None:
    """Let the group writer run all queued calls of `fn` at once: many(conn, [args, ...]) ->
    [results], in order, in fewer statements."""
    _MANY[fn] = many


def _run_all(conn, batch) -> list:
    """Each write's result, in order; the calls of a `batched` function all at once."""
    results: list = [None] * len(batch)
    groups: dict = {}
    for i, (fn, args, _) in enumerate(batch):
        many = _MANY.get(fn)
        if many is None:
            results[i] = fn(conn, *args)
        else:
            groups.setdefault(many, []).append(i)
    for many, indexes in groups.items():
        for i, result in zip(indexes, many(conn, [batch[i][1] for i in indexes]), strict=True):
            results[i] = result
    return results
