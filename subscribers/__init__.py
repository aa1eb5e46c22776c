"""The admins' subscriber store: lists, subscribers, memberships, history. Never imports mailer.

    normalize.py   raw address -> normalized address (or InvalidAddress); raw name -> clean line
    models.py      the tables and status enums (the shared database contract, docs/design.md)
    db.py          URL -> Engine, with this package's Alembic migrations (migrations/) applied
    store.py       Connection + intent -> state change + history row (reads: queries.py)
    csvfile.py     CSV file -> header mapping + records with line numbers; formula-safe cells
    parse.py       records -> validated rows, one per address
    importer.py    CSV file + list -> chunked bulk upserts (bulk.py; parsing in _reader.py) -> summary
    exporter.py    list -> CSV file (formula cells neutralized)
    tokens.py      (purpose, subscriber, list, key) <-> signed URL token; sealed requests; forget hashes
    links.py       membership <-> token through the row: a link acts on the row it was made for only

Importing this package is cheap on purpose: `mailer`'s CLI imports `subscribers.errors` at start-up.
"""
