"""Admin web interface benchmark: every admin page, and the bulk actions per 1,000 subscribers, at
1,000,000 subscribers, on SQLite and on the machine's PostgreSQL.

The server is `mailer serve` in its own process; this process logs in through the real form and
asks for pages one after another (closed loop, one request at a time, keep-alive), as an admin
clicking would. Latency is from sending the request to the last byte of the page.
  search:  /admin/subscribers?q=TEXT, TEXT the first 2-6 letters of a random subscriber's address
           or name, or an `@domain` (subscribers/search.py: trigrams, or where a word starts)
  members: /admin/lists/crank?after=ID[&status=S], a random page of the list, all or one status
  view:    /admin/subscribers?[tag=press|vip][&status=S][&after=ID]: the filtered view (press: one
           subscriber in 10, vip: one in 100), a random page
  person:  /admin/subscribers/ID, a random subscriber's page
  audit:   /admin/audit?[user=U|action=A|subscriber=ID][&before=ID], 200,000 entries
  pages:   /admin, /admin/lists, /admin/users, /admin/issues, /admin/account
  bulk:    POST /admin/subscribers/act with 1,000 ticked subscribers (tag, untag, unsubscribe,
           add_to_list): one request per 1,000 rows, the page after it included

    .venv/bin/python bench/admin.py [--subscribers 1000000] [--requests 200] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.report import write_section  # noqa: E402
from bench.web import PG, start_server, write_config  # noqa: E402

FIRST = ["ann", "bob", "carla", "dmitri", "eve", "fatima", "george", "hana", "ivan", "julia", "kofi", "lena",
         "mateo", "nora", "omar", "priya", "quentin", "rosa", "sven", "tariq", "uma", "victor", "wen", "ximena",
         "yusuf", "zoe"]
LAST = ["lee", "garcia", "smith", "nguyen", "okafor", "muller", "rossi", "tanaka", "silva", "kowalski",
        "haddad", "johansson", "dubois", "kim", "patel", "brown", "novak", "costa", "ivanova", "obi"]
DOMAINS = [f"mail{i}.example" for i in range(40)] + ["example.com", "example.org", "post.example"]
PASSWORD = "bench password 0123456789"


def person(i: int) -> tuple[str, str]:
    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    return f"{first}.{last}{i}@{DOMAINS[i % len(DOMAINS)]}", f"{first.title()} {last.title()}"


def _pool(words: list[str], index: str) -> str:
    """SQL for words[index] on SQLite and PostgreSQL alike: a slice of one space-padded string."""
    width = max(map(len, words))
    padded = "".join(w.ljust(width) for w in words)
    return f"rtrim(substr('{padded}', ({index}) * {width} + 1, {width}))"


def seed(db_url: str, n: int) -> None:
    """n subscribers (person(i), made by the database itself: a million rows in one INSERT ...
    SELECT) on list crank, 85 % active and the rest spread over the other statuses, and an admin
    user; the schema comes from both migration histories, indexes included."""
    from sqlalchemy import case, insert, literal, select, text

    from mailer import admin_users
    from mailer.migrate import connect
    from subscribers import store
    from subscribers.models import memberships, subscribers, utcnow

    engine = connect(db_url)
    now = utcnow()
    with engine.begin() as conn:
        lid = store.create_list(conn, "crank", title="CRANK Call").id
        admin_users.add_user(conn, "bench", PASSWORD)
    first = _pool(FIRST, f"i % {len(FIRST)}")
    last = _pool(LAST, f"(i / {len(FIRST)}) % {len(LAST)}")
    domain = _pool(DOMAINS, f"i % {len(DOMAINS)}")
    series = ("generate_series(0, :n - 1) AS n(i)" if engine.dialect.name == "postgresql" else
              "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n - 1) SELECT i FROM s) AS n")
    title = "upper(substr({0}, 1, 1)) || substr({0}, 2)"
    email = f"{first} || '.' || {last} || CAST(i AS TEXT) || '@' || {domain}"
    with engine.begin() as conn:    # `search` as subscribers.search.search_text writes it for ASCII
        conn.execute(text(
            f"INSERT INTO subscribers (email, name, attributes, created_at, updated_at, search) "
            f"SELECT {email}, {title.format(first)} || ' ' || {title.format(last)}, '{{}}', :now, :now, "
            f"{first} || ' ' || {last} || :newline || {email} FROM {series}"),
            {"n": n, "now": now, "newline": "\n"})
    bucket = subscribers.c.id % 100
    status = case((bucket < 85, "active"), (bucket < 92, "unsubscribed"), (bucket < 96, "unconfirmed"),
                  (bucket < 99, "bounced"), else_="complained")
    with engine.begin() as conn:
        conn.execute(insert(memberships).from_select(
            ["list_id", "subscriber_id", "status", "consent_source", "consent_at", "created_at", "updated_at"],
            select(literal(lid), subscribers.c.id, status, literal("import"), literal(now), literal(now),
                   literal(now))))
    with engine.begin() as conn:    # tags: press on one subscriber in 10, vip on one in 100
        store.create_list(conn, "digest", title="The Digest")
        for tag, every in (("press", 10), ("vip", 100)):
            conn.execute(text(f"INSERT INTO subscriber_tags (subscriber_id, tag) SELECT id, '{tag}' FROM subscribers "
                              f"WHERE id % {every} = 0"))
        # the audit log: 200,000 entries, by three actors, on subscribers spread over the table
        conn.execute(text(
            f"INSERT INTO audit_log (at, actor, via, ip, action, subscriber_id, detail) "
            f"SELECT :now, CASE WHEN i % 3 = 0 THEN 'bench' WHEN i % 3 = 1 THEN 'ops' ELSE 'api-token' END, 'web', "
            f"'192.0.2.1', CASE WHEN i % 2 = 0 THEN 'subscriber.tag' ELSE 'subscriber.unsubscribe' END, "
            f"i * 5 % :n + 1, NULL FROM {series}"), {"n": min(n, 200_000), "now": now})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    engine.dispose()


def login(url: str) -> httpx.Client:
    import re

    client = httpx.Client(base_url=url, timeout=60, headers={"accept": "text/html"})
    page = client.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    reply = client.post("/admin/login", data={"username": "bench", "password": PASSWORD, "csrf": token})
    assert reply.status_code == 303, reply.text
    return client


def paths(n: int, count: int, rng: random.Random) -> dict[str, list[str]]:
    search = []
    for _ in range(count):
        email, name = person(rng.randrange(n))
        pick = rng.random()
        if pick < 0.1:
            search.append("@" + email.split("@")[1])
        else:
            source = email if pick < 0.6 else name
            search.append(source[: rng.randint(2, 6)])
    members = []
    for _ in range(count):
        status = rng.choice(["", "", "active", "unsubscribed", "bounced"])
        after = rng.randrange(n) if rng.random() < 0.8 else 0
        members.append(f"/admin/lists/crank?after={after}" + (f"&status={status}" if status else ""))
    view = []
    for _ in range(count):
        parts = [rng.choice(["", "tag=press", "tag=vip", "tag=press&tag=vip"]),
                 rng.choice(["", "", "status=active", "status=unsubscribed", "status=bounced"]),
                 f"after={rng.randrange(n)}" if rng.random() < 0.5 else ""]
        view.append("/admin/subscribers?" + "&".join(p for p in parts if p))
    audit = []
    for _ in range(count):
        parts = [rng.choice(["", "user=ops", "action=subscriber.tag", f"subscriber={rng.randrange(n) + 1}"]),
                 f"before={rng.randrange(200_000)}" if rng.random() < 0.5 else ""]
        audit.append("/admin/audit?" + "&".join(p for p in parts if p))
    pages = [rng.choice(["/admin", "/admin/lists", "/admin/users", "/admin/issues", "/admin/account"])
             for _ in range(count)]
    return {"search": [f"/admin/subscribers?q={httpx.QueryParams({'q': q})['q']}" for q in search],
            "members": members, "view": view, "person": [f"/admin/subscribers/{rng.randrange(n) + 1}"
                                                         for _ in range(count)],
            "audit": audit, "pages": pages}


def bulk(client: httpx.Client, n: int, rounds: int, rng: random.Random) -> dict:
    """POST /admin/subscribers/act with 1,000 ticked ids, each action `rounds` times on fresh rows."""
    import re

    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/account").text).group(1)
    times = []
    for _ in range(rounds):
        start_id = rng.randrange(n - 1000) + 1
        ids = [str(i) for i in range(start_id, start_id + 1000)]
        for action, extra in (("tag", {"tag": "bulk"}), ("untag", {"tag": "bulk"}),
                              ("add_to_list", {"list": "digest"}), ("unsubscribe", {"list": "digest"})):
            started = time.perf_counter()
            reply = client.post("/admin/subscribers/act", data={"csrf": token, "action": action, "selected": ids,
                                                                **extra})
            times.append(1000 * (time.perf_counter() - started))
            reply.raise_for_status()
            assert "subscriber" in reply.text
    times.sort()
    return {"requests": len(times), "median": statistics.median(times),
            "p99": statistics.quantiles(times, n=100, method="inclusive")[98], "max": times[-1]}


def measure(client: httpx.Client, urls: list[str]) -> dict:
    client.get(urls[0])                                               # warm-up
    times = []
    for url in urls:
        start = time.perf_counter()
        reply = client.get(url)
        times.append(1000 * (time.perf_counter() - start))
        reply.raise_for_status()
    times.sort()
    return {"requests": len(times), "median": statistics.median(times),
            "p99": statistics.quantiles(times, n=100, method="inclusive")[98], "max": times[-1]}


def run(label: str, db_url: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        if db_url.startswith("sqlite"):
            db_url = f"sqlite:///{tmp}/bench.db"
        started = time.perf_counter()
        seed(db_url, args.subscribers)
        print(f"{label}: seeded {args.subscribers:,} subscribers in {time.perf_counter() - started:.0f} s", flush=True)
        config = write_config(Path(tmp), "", db_url)
        proc, port = start_server(config)
        try:
            client = login(f"http://127.0.0.1:{port}")
            try:
                todo = paths(args.subscribers, args.requests, random.Random(11))
                found = {page: measure(client, urls) for page, urls in todo.items()}
                found["bulk, 1,000 rows"] = bulk(client, args.subscribers, max(5, args.requests // 8),
                                                 random.Random(12))
                return found
            finally:
                client.close()
        finally:
            proc.terminate()
            proc.wait(10)


def _pg_schema() -> tuple[str, callable]:
    import uuid

    import psycopg

    schema = f"bench_admin_{uuid.uuid4().hex[:8]}"
    plain = PG.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {"SQLite": run("SQLite", "sqlite://", args)}
    if not args.sqlite_only:
        url, drop = _pg_schema()
        try:
            results["PostgreSQL"] = run("PostgreSQL", url, args)
        finally:
            drop()
    rows = ["| database | page | requests | median | p99 | max |", "|---|---|---:|---:|---:|---:|"]
    for db, pages in results.items():
        for page, r in pages.items():
            rows.append(f"| {db} | {page} | {r['requests']} | {r['median']:.1f} ms | {r['p99']:.1f} ms | "
                        f"{r['max']:.1f} ms |")
    print("\n".join(rows))
    command = "bench/run admin" if args.subscribers == 1_000_000 and args.requests == 200 else \
        f".venv/bin/python bench/admin.py --subscribers {args.subscribers} --requests {args.requests}"
    write_section("admin", f"""## Admin web interface: every page, and bulk actions per 1,000 rows

{args.subscribers:,} subscribers on one list (one in 10 tagged press, one in 100 vip), 200,000
audit entries; `mailer serve` in its own process, one admin asking for one page after another over
keep-alive (latency to the last byte). Goal: p99 under 200 ms, bulk actions per 1,000 rows included.
*search*: `/admin/subscribers?q=` with the first 2-6 letters of an address or name (one in ten an
`@domain`; how each is found: "How contains costs" below); *members*: `/admin/lists/crank?after=ID`,
a random page, all members or one status; *view*: `/admin/subscribers?tag=...&status=...&after=ID`,
the filtered view with its checkboxes and capped count; *person*: one subscriber's page; *audit*:
`/admin/audit`, filtered by user, action or subscriber, a random page; *pages*: the dashboard,
lists, users, issues, account; *bulk*: one `POST /admin/subscribers/act` with 1,000 ticked
subscribers (tag, untag, add to a list, unsubscribe: each writes 1,000 history rows and 1,000 audit
entries), the page after it included.

{chr(10).join(rows)}

**How contains costs** (subscribers/search.py). Three characters or more match anywhere in a name
or address, in any script: on SQLite through an FTS5 trigram index of the folded `search` column
(migration 0016_i24c; triggers keep it in step with every writer), on PostgreSQL through pg_trgm's
GIN index (0014_i24b). A text starting with `@` is where the domain starts: on PostgreSQL a btree
range on the address from its `@` (0016_i24c), since nearly every address holds "exa", "amp", ...,
and intersecting those trigram lists took 400 ms; on SQLite the trigram index. One or two
characters match where the name, a word of it, the address or its domain starts (one: the address
or the name), so "le" finds "Ann Lee", not every "example". Either way the page reads at most
1,001 matches, in the index's order, and sorts those by address: with more than 1,000 it says
"more than 1,000" (narrow the search), and reading or sorting all 38,000 matches of "ann" is never
done. Before this (main at 6d314a5: SQLite's `search` scanned, then every match sorted; the
PostgreSQL domain search intersecting trigrams) search measured SQLite median 534 ms, p99 903 ms;
PostgreSQL median 64 ms, p99 404 ms (load 2.7 to 1.9).

Load average while measuring: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores, shared
with other work: above 2, every figure above is inflated by the wait for a core).
""", command)


if __name__ == "__main__":
    main()
