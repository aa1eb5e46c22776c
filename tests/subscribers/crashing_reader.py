"""A reader process that dies before it says anything (run by test_import as `python -m`)."""

raise RuntimeError("the reader broke while starting")
