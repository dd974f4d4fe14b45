"""Fixtures: see helpers.py."""

from .helpers import appliance, endpoint, lab, _reset  # noqa: F401 - pytest fixtures
