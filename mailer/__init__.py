"""CRANK Call's newsletter pipeline: source -> compose -> inline -> personalize -> deliver -> events."""

__version__ = "0.1.0"
