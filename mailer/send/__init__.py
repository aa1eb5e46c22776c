"""Stage 5-6: ComposedIssue x list -> each reader's copy delivered once.

Modules: dispatch, batches, ledger, stall, workers, deliver/."""
