"""Errors of the evidence subsystem."""

from __future__ import annotations

from ..store import StoreError


class EvidenceError(StoreError):
    """Evidence state that cannot be used: a key with loose permissions or
    that does not match its pinned public key, a log written by another key,
    a refused prune. Like a :class:`~osiris.store.StoreError` it stops the
    agent (or the command) with this message, which names the file and what
    was expected."""


class VerificationError(EvidenceError):
    """Something signed or hashed does not check out."""
