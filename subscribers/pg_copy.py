"""PostgreSQL import: each chunk of parsed rows -> COPY into a staging table -> one set-based merge.

The write side of `importer.import_csv` on PostgreSQL (importer._Job hands its chunks here). Per
chunk, in the import's transaction:

1. COPY (binary: no quoting or escaping, so any text the parser lets through arrives as it was)
   the chunk's rows into `import_stage`;
2. one INSERT ... SELECT joins them with `subscribers`, this list's `memberships` and the ids this
   run has written already (`import_seen_ids`) into `import_plan`;
3. one statement inserts the new subscribers, their memberships and their history (data-modifying
   CTEs, ids taken from RETURNING);
4. one statement updates names and attributes, joins existing subscribers to the list, writes
   their history, and returns the summary's counts.

Nothing per row travels back to Python except the rare status moves, which take the store's own
path (store.set_status, as on SQLite), and, only once the store has forgotten addresses, the new
addresses (their keyed hashes are computed here: the key never goes to the server). The merge
rules are importer.py's, expressed in SQL; tests/subscribers/test_import.py runs every case on
both databases. Design notes and figures: docs/postgresql.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from subscribers import store
from subscribers.bulk import Bulk
from subscribers.errors import ListNotFound, SecretRequired
from subscribers.models import ConsentSource, utcnow
from subscribers.parse import Row, membership_consent
from subscribers.tokens import forget_hash

CHUNK = 20_000  # rows per COPY + merge (and per commit): fixed costs are noise, memory stays flat (and small)
_SUPPRESSED = "('unsubscribed', 'bounced', 'complained')"
_GLOBAL = "('bounced', 'complained')"
_STAGE_COLUMNS = ("line", "email", "name", "attributes", "status", "consent_at", "consent_ip", "optin_at", "optin_ip")
_STAGE_TYPES = ("int4", "text", "text", "jsonb", "text", "timestamptz", "text", "timestamptz", "text")

_CREATE = [
    "CREATE TEMPORARY TABLE IF NOT EXISTS import_stage (line int, email text, name text, attributes jsonb, "
    "status text, consent_at timestamptz, consent_ip text, optin_at timestamptz, optin_ip text)",
    "CREATE TEMPORARY TABLE IF NOT EXISTS import_plan (line int, email text, name text, attributes jsonb, "
    "status text, consent_at timestamptz, consent_ip text, optin_at timestamptz, optin_ip text, sid int, "
    "old_name text, old_attrs jsonb, glob text, member text, seen boolean)",
    "CREATE TEMPORARY TABLE IF NOT EXISTS import_seen_ids (id int PRIMARY KEY)",
]

# Step 2: each staged row with the store's side of it. LATERAL ... LIMIT 1 (the keys are unique)
# keeps these one index lookup per staged row: a plain join let the planner, which knows nothing
# of a temporary table, hash the whole subscribers table for every chunk (2.6 s a chunk at 1M).
# `seen`: this run wrote it already (an earlier chunk held the address), so the row is a duplicate
# and may only fill blanks.
_PLAN = """
INSERT INTO import_plan
SELECT s.line, s.email, s.name, s.attributes, s.status, s.consent_at, s.consent_ip, s.optin_at, s.optin_ip,
       b.id, b.name, b.attributes,
       b.global_status, m.status,
       b.id IS NOT NULL AND (b.created_at >= :started OR EXISTS (SELECT 1 FROM import_seen_ids x WHERE x.id = b.id))
FROM import_stage s
LEFT JOIN LATERAL (SELECT * FROM subscribers WHERE email = s.email LIMIT 1) b ON true
LEFT JOIN LATERAL (SELECT status FROM memberships WHERE subscriber_id = b.id AND list_id = :list_id LIMIT 1) m ON true
"""

# Step 3: addresses new to the store, in file order (ids follow the file); `conflict`: see
# PgMerge._insert_new.
_NEW = f"""
WITH ins AS (
  INSERT INTO subscribers (email, name, attributes, global_status, created_at, updated_at)
  SELECT email, name, attributes, CASE WHEN status IN {_GLOBAL} THEN status END, :now, :now
  FROM import_plan WHERE sid IS NULL ORDER BY line
  {{conflict}}
  RETURNING id, email
), rows AS (
  SELECT ins.id, p.line, p.status, p.consent_at, p.consent_ip, p.optin_at, p.optin_ip
  FROM ins JOIN import_plan p ON p.email = ins.email
), mem AS (
  INSERT INTO memberships (list_id, subscriber_id, status, consent_at, consent_ip, optin_at, optin_ip,
                           consent_source, created_at, updated_at)
  SELECT :list_id, id, status, coalesce(consent_at, :now), consent_ip, optin_at, optin_ip, :source, :now, :now
  FROM rows
), hist AS (
  INSERT INTO history (subscriber_id, list_id, at, action, old_status, new_status, source, detail)
  SELECT id, :list_id, :now, 'subscribe', NULL, status, 'import',
         jsonb_build_object('file', CAST(:file AS text), 'line', line)
  FROM rows ORDER BY line
)
SELECT count(*) FROM rows
"""

# Existing subscribers that the import may touch, with their merged name and attributes. The
# rules of importer._Job._data_update: the file's non-empty values win, or only fill blanks
# (--no-overwrite, or a duplicate of an earlier row of this run).
_MERGED = f"""
WITH x AS (
  SELECT p.*, coalesce(p.old_attrs, '{{}}'::jsonb) AS was, p.seen OR NOT :overwrite AS fill
  FROM import_plan p
  WHERE p.sid IS NOT NULL AND p.glob IS NULL AND (p.member IS NULL OR p.member NOT IN {_SUPPRESSED})
), y AS (
  SELECT x.*,
         CASE WHEN (fill AND coalesce(old_name, '') <> '') OR name = '' THEN old_name ELSE name END AS new_name,
         CASE WHEN attributes = was OR attributes = '{{}}' THEN was  -- the common re-import case, no merging
              WHEN fill THEN attributes || was ELSE was || attributes END AS new_attrs
  FROM x
), z AS (
  SELECT y.*, new_name IS DISTINCT FROM old_name AS name_changed, new_attrs <> was AS attrs_changed FROM y
)
"""

# Step 4. Counts: joined (new to this list), updated/unchanged/duplicates among members whose
# status the store does not move (those come back one by one from _STATUS_MOVES), suppressed.
_EXISTING = _MERGED + f"""
, upd AS (
  UPDATE subscribers b SET name = z.new_name, attributes = z.new_attrs, updated_at = :now
  FROM z WHERE b.id = z.sid AND (z.name_changed OR z.attrs_changed)
), uhist AS (
  INSERT INTO history (subscriber_id, list_id, at, action, old_status, new_status, source, detail)
  SELECT sid, NULL, :now, 'update', NULL, NULL, 'import',
         jsonb_build_object('file', CAST(:file AS text), 'line', line, 'fields', to_jsonb(array_remove(ARRAY[
           CASE WHEN name_changed THEN 'name' END, CASE WHEN attrs_changed THEN 'attributes' END], NULL)))
  FROM z WHERE name_changed OR attrs_changed ORDER BY line
), joined AS (
  INSERT INTO memberships (list_id, subscriber_id, status, consent_at, consent_ip, optin_at, optin_ip,
                           consent_source, created_at, updated_at)
  SELECT :list_id, sid, status, coalesce(consent_at, :now), consent_ip, optin_at, optin_ip, :source, :now, :now
  FROM z
  WHERE member IS NULL AND EXISTS (SELECT 1 FROM subscribers b WHERE b.id = z.sid)  -- (not forgotten meanwhile)
  ORDER BY line
  ON CONFLICT (list_id, subscriber_id) DO NOTHING
  RETURNING subscriber_id
), jhist AS (
  INSERT INTO history (subscriber_id, list_id, at, action, old_status, new_status, source, detail)
  SELECT z.sid, :list_id, :now, 'subscribe', NULL, z.status, 'import',
         jsonb_build_object('file', CAST(:file AS text), 'line', z.line)
  FROM joined j JOIN z ON z.sid = j.subscriber_id ORDER BY z.line
), members AS (
  SELECT seen, name_changed OR attrs_changed AS changed FROM z
  WHERE member IS NOT NULL AND (status = member OR status = 'unconfirmed')
)
SELECT (SELECT count(*) FROM joined),
       (SELECT count(*) FILTER (WHERE changed AND NOT seen) FROM members),
       (SELECT count(*) FILTER (WHERE NOT changed AND NOT seen) FROM members),
       (SELECT count(*) FILTER (WHERE seen) FROM members),
       (SELECT count(*) FILTER (WHERE NOT seen) FROM import_plan
        WHERE sid IS NOT NULL AND (glob IS NOT NULL OR member IN {_SUPPRESSED})),
       (SELECT count(*) FILTER (WHERE seen) FROM import_plan
        WHERE sid IS NOT NULL AND (glob IS NOT NULL OR member IN {_SUPPRESSED}))
"""

# Members whose status the file moves (unconfirmed -> active, or into suppression), and addresses
# joined with a bounced/complained status: rare, so store.set_status applies them one by one.
_STATUS_MOVES = _MERGED + """
SELECT sid, status, line, member, seen, name_changed OR attrs_changed FROM z
WHERE (member IS NOT NULL AND status <> member AND status <> 'unconfirmed')
   OR (member IS NULL AND status IN ('bounced', 'complained'))
ORDER BY line
"""

# With the foreign-key triggers off (see _without_fk_triggers): the locks those checks would
# take, once per chunk instead of once per row, so that no concurrent delete of the list or of
# a subscriber we join can leave a membership without its parent.
_LOCK_LIST = "SELECT 1 FROM lists WHERE id = :list_id FOR KEY SHARE"
_LOCK_JOINED = """
SELECT count(*) FROM (SELECT 1 FROM subscribers WHERE id IN (
  SELECT sid FROM import_plan WHERE sid IS NOT NULL AND member IS NULL AND glob IS NULL) FOR KEY SHARE) locked
"""

# (A chunk holds each address once, and `seen` rows are in the table already: no conflict possible.)
_REMEMBER = """
INSERT INTO import_seen_ids (id) SELECT sid FROM import_plan WHERE sid IS NOT NULL AND NOT seen
"""


class PgMerge:
    """One import's write side on PostgreSQL; `run` takes importer._Job's chunks."""

    def __init__(self, job):
        self.job, self.conn = job, job.conn
        self.params = {"list_id": job.list_id, "file": job.file_name, "started": job.started,
                       "overwrite": job.overwrite, "source": ConsentSource.IMPORT.value}
        self.fk_off: bool | None = None
        for sql in _CREATE:
            self.conn.exec_driver_sql(sql)
        self._sql("TRUNCATE import_stage, import_plan, import_seen_ids")

    def run(self, rows: dict[str, Row]) -> None:
        conn, summary = self.conn, self.job.summary
        self._sql("TRUNCATE import_stage, import_plan")
        fast = self._tune()
        self._copy(rows.values())
        self._sql(_PLAN)
        self._drop_forgotten()
        if fast:
            self._sql(_LOCK_JOINED)
        self.params["now"] = now = utcnow()
        summary.imported += self._insert_new()
        moved = self._status_moves(now)  # before the updates, as on SQLite: their history rows come first
        joined, updated, unchanged, duplicates, suppressed, suppressed_again = self._sql(_EXISTING).one()
        summary.imported += joined
        summary.updated += updated
        summary.unchanged += unchanged
        summary.duplicates += duplicates + suppressed_again
        summary.suppressed += suppressed
        for sid, status, line in moved:  # a file that says bounced/complained: suppressed on every list
            store.set_status(conn, sid, None, status, "import", {"file": self.job.file_name, "line": line})
        self._sql(_REMEMBER)

    def _tune(self) -> bool:
        """Per transaction (SET LOCAL; nothing server-wide): sorts of a chunk in memory, and
        the memberships' foreign-key checks off where this role may turn them off. Those checks
        are one trigger call per row and foreign key, much of a first import's server time
        (docs/postgresql.md); the rows they check are ours: the list, locked here
        once, subscribers inserted by this transaction, and existing ones locked by _LOCK_JOINED.
        Returns whether the checks are off."""
        conn = self.conn
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        conn.exec_driver_sql("SET LOCAL jit = off")  # compiling costs more than it saves on a chunk
        if self.fk_off is None:
            self.fk_off = may_skip_fk_checks(conn)
        if not self.fk_off:
            return False
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        if self._sql(_LOCK_LIST).first() is None:
            raise ListNotFound(self.job.summary.list)  # deleted while the import ran
        return True

    def _insert_new(self) -> int:
        """A plain INSERT: ON CONFLICT's speculative insertion cost far more (docs/decisions.md). An
        address that someone signed up with since the plan was made fails it; then the chunk's
        new rows go again, skipping such addresses."""
        try:
            with self.conn.begin_nested():
                return self._sql(_NEW.format(conflict="")).scalar()
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != "23505":  # unique_violation
                raise
        return self._sql(_NEW.format(conflict="ON CONFLICT (email) DO NOTHING")).scalar()

    def _sql(self, sql: str):
        return self.conn.execute(text(sql), self.params)

    def _copy(self, rows) -> None:
        Bulk(self.conn).copy_into("import_stage", _STAGE_COLUMNS, _STAGE_TYPES,
                                  ((r.line, r.email, r.name, r.attrs_json, r.status, r.consent_at,
                                    *membership_consent(r.consent)) for r in rows))

    def _drop_forgotten(self) -> None:
        """New addresses whose keyed hash is in `forgotten`: suppressed, left out of the plan."""
        conn = self.conn
        if conn.exec_driver_sql("SELECT 1 FROM forgotten LIMIT 1").first() is None:
            return
        new = conn.exec_driver_sql("SELECT email FROM import_plan WHERE sid IS NULL").scalars().all()
        if not new:
            return
        if not self.job.secret:
            raise SecretRequired("this database has forgotten addresses; MAILER_SECRET_KEY must be set "
                                 "so that the import can skip them")
        hashes = {forget_hash(self.job.secret, e): e for e in new}
        gone = [hashes[h] for (h,) in Bulk(conn).select_in(
            "SELECT email_hash FROM forgotten WHERE email_hash {in_}", list(hashes))]
        if gone:
            conn.execute(text("DELETE FROM import_plan WHERE email = ANY(:gone)"), {"gone": gone})
            self.job.summary.suppressed += len(gone)

    def _status_moves(self, now: datetime) -> list[tuple[int, str, int]]:
        """Apply the members' status moves; returns the joined rows whose global status is left
        to set once their membership exists."""
        summary, later = self.job.summary, []
        for sid, status, line, member, seen, data_changed in self._sql(_STATUS_MOVES).all():
            if member is None:
                later.append((sid, status, line))
                continue
            detail = {"file": self.job.file_name, "line": line}
            changed = store.set_status(self.conn, sid, self.job.list_id, status, "import", detail) or data_changed
            summary.updated += changed and not seen
            summary.unchanged += not changed and not seen
            summary.duplicates += seen
        return later


def may_skip_fk_checks(conn: Connection) -> bool:
    """A superuser may; since PostgreSQL 15 so may a role granted it
    (`GRANT SET ON PARAMETER session_replication_role TO ...`)."""
    if conn.exec_driver_sql("SELECT current_setting('is_superuser')").scalar() == "on":
        return True
    if (conn.dialect.server_version_info or (0,)) < (15,):
        return False
    return bool(conn.exec_driver_sql("SELECT has_parameter_privilege('session_replication_role', 'SET')").scalar())


def drop(conn: Connection) -> None:
    """The import's temporary tables (the connection goes back to the pool)."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS import_stage, import_plan, import_seen_ids")
