"""Stage 1-4: issues/YYYY-MM.md -> ComposedIssue -> one reader's message.

Modules: source, render, inline, personalize, lint, preview."""
