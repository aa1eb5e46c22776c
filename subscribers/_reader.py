"""CSV file -> pickled chunks of parsed rows on stdout: the importer's reader process.

`python -m subscribers._reader PATH STATUS CHECK_DNS CHUNK`. Run by importer.py so parsing and
validating (CPU-bound Python) overlap with writing on a second core; a pipe's small buffer is
the backpressure that keeps both processes' memory flat. Messages (pickle, one after another):
("rows", [row tuples], rows read, duplicates merged, [(line, email, reason)], byte position),
then ("done",) or ("error", message, path, line).
"""

from __future__ import annotations

import pickle
import sys
import traceback
from itertools import islice
from pathlib import Path

from subscribers.csvfile import CsvSource
from subscribers.errors import CsvImportError
from subscribers.importer import ImportSummary
from subscribers.parse import RowParser


def main(argv: list[str]) -> int:
    path, status, check_dns, chunk_size = argv[0], argv[1], argv[2] == "1", int(argv[3])
    out = sys.stdout.buffer

    def send(message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    summary = ImportSummary(file=path, list="")
    try:
        with CsvSource(Path(path), check_encoding=False) as source:
            parser = RowParser(source.columns, summary, status, check_dns)
            rows = source.rows()
            while chunk := list(islice(rows, chunk_size)):
                counted, duplicates = summary.rows, summary.duplicates
                merged = parser.merge(chunk)
                invalid = [(r.line, r.email, r.reason) for r in summary.invalid_rows]
                summary.invalid_rows.clear()
                send(("rows", [r.as_tuple() for r in merged.values()], summary.rows - counted,
                      summary.duplicates - duplicates, invalid, source.position()))
        send(("done",))
    except CsvImportError as exc:
        send(("error", exc.message, exc.path, exc.line))
    except BrokenPipeError:  # the importer stopped reading (an error on its side): just go
        return 1
    except Exception as exc:  # noqa: BLE001 - reported by the parent, with the file named
        send(("error", f"could not read the file: {exc!r}\n{traceback.format_exc().strip()}", path, None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
