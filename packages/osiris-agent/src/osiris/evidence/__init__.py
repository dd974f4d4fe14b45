"""The evidence log: scrubbed, canonical, signed bundles in an append-only,
Merkle-tree log with signed checkpoints, proofs and offline verification.

Modules (import what you need; this package imports nothing eagerly so that
``osiris.config`` can import :mod:`.settings` without a cycle):

* :mod:`.settings` the ``evidence`` section of the config file
* :mod:`.canonical` RFC 8785 canonical JSON
* :mod:`.scrub` PHI scrubbing with typed placeholders
* :mod:`.keys` the appliance's Ed25519 key: created once, pinned, checked
* :mod:`.files` durable, never-overwriting file writes
* :mod:`.note` C2SP signed notes and checkpoints
* :mod:`.merkle` RFC 6962 / 9162 tree hashing and proofs
* :mod:`.log` the append-only log (SQLite, group commit)
* :mod:`.bundle` building bundles, the signed-bundle envelope sinks receive
* :mod:`.verify` verification of the log, of one bundle and of an export
* :mod:`.export` the auditor's export (zip with VERIFY.md)
* :mod:`.standalone` the export's own verifier (``verify.py``: standard library and openssl only)
* :mod:`.outbox` durable per-sink delivery with retries and backoff
* :mod:`.service` what the agent runs: ``ctx.evidence.record(kind, payload)``
* :mod:`.cli` ``osiris evidence verify|export|show|...``

docs/evidence.md describes the formats.
"""
