"""Fixtures for the delivery tests: the local servers and a prepared edition."""

from tests.servers.fixtures import *  # noqa: F401,F403 - pytest finds fixtures by name
