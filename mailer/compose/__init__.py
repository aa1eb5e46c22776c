"""Stage 1-4: issues/YYYY-MM.md -> ComposedIssue -> one reader's message (source, render, inline, personalize, lint, preview)."""
