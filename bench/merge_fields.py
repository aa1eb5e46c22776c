"""Benchmark merge fields: the same sends as bench/send.py, with and without `{{ first_name }}`.

The November issue as it is, then the same issue with a merge field (and its fallback) in the
subject and in the greeting, so every reader's subject and body differ. Each pair of rows must be
within the run-to-run noise: merge fields are filled by the same splicing as the footer's fields
(mailer/compose/personalize.py), and SendGrid gets them as substitutions with the content sent once per
request. Writes the "merge-fields" section of BENCHMARKS.md.

    .venv/bin/python bench/merge_fields.py [--sendgrid 100000] [--smtp 2000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send import measured, sendgrid_server, smtp_sink  # noqa: E402


def merge_issue(folder: Path) -> Path:
    """The November issue with "Dear {{ first_name | default("reader") }}," in subject and body."""
    original = (ROOT / "issues" / "2024-11.md").read_text(encoding="utf-8")
    text = original.replace('subject = "CRANK Call | November 2024"',
                        "subject = 'CRANK Call | November 2024, for {{ first_name | default(\"you\") }}'", 1)
    text = text.replace("\nCRANK Call is a monthly review",
                        '\nDear {{ first_name | default("reader") }}, CRANK Call is a monthly review', 1)
    assert text.count("{{") == original.count("{{") + 2   # the file's own comments show the syntax too
    path = folder / "2024-11.md"
    path.write_text(text, encoding="utf-8")
    return path


def run(kind: str, n: int, target_for, issue: Path | None) -> dict:
    os.environ["BENCH_ISSUE"] = str(issue) if issue else ""
    return measured(kind, n, target_for)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sendgrid", type=int, default=100_000)
    parser.add_argument("--smtp", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        issue = merge_issue(Path(tmp))
        for _ in range(args.repeat):   # interleaved, so a change in the host's speed hits both
            for label, path in (("as it is", None), ("with merge fields", issue)):
                r = run("sendgrid", args.sendgrid, sendgrid_server, path)
                rows.append(("sendgrid", label, args.sendgrid, r))
                print(f"sendgrid {label} {args.sendgrid:,}: {r}", flush=True)
                r = run("smtp", args.smtp, smtp_sink(True), path)
                rows.append(("smtp (bulk-DATA sink)", label, args.smtp, r))
                print(f"smtp {label} {args.smtp:,}: {r}", flush=True)
    from bench.report import write_section

    write_section("merge-fields", report(rows, args), "bench/run merge_fields")


def report(rows, args) -> str:
    lines = ["## Merge fields: the same send with and without `{{ first_name }}`", "",
             "Whole sends as in the send section (fresh child process, SQLite ledger, local servers), of the "
             "November issue as it is and with `{{ first_name | default(...) }}` in the subject and the "
             f"greeting; each pair run {args.repeat} times, interleaved.", "",
             "| backend | issue | readers | wall time | readers/s | client CPU | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for kind, label, n, r in rows:
        lines.append(f"| {kind} | {label} | {n:,} | {r['wall']:.1f} s | {n / r['wall']:,.0f} | "
                     f"{r['cpu']:.1f} s | {r['peak_mb']:.0f} MB |")
    best = {}
    for kind, label, _n, r in rows:
        best[kind, label] = min(best.get((kind, label), float("inf")), r["cpu"])
    lines.append("")
    for kind in dict.fromkeys(k for k, _ in best):
        plain, merged = best[kind, "as it is"], best[kind, "with merge fields"]
        lines.append(f"- {kind}: best client CPU {plain:.2f} s as it is, {merged:.2f} s with merge fields "
                     f"({(merged / plain - 1) * 100:+.0f} %).")
    lines += ["", "Compare client CPU within a pair: wall time follows the shared machine's load. The "
              "default sizes are 100,000 (SendGrid) and 2,000 (SMTP); smaller runs say so in the table."]
    lines += ["", f"Load average when written: {os.getloadavg()[0]:.2f} (2 cores, shared with other work)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
