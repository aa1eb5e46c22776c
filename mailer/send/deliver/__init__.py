"""Stage 6: outgoing batch -> results, through one of three backends (base.Backend; the names and
their classes: registry.py)."""
