"""The agent's side of an update's evidence (docs/updates.md, docs/evidence.md).

The root unit (runner.py) appends each step it takes to its journal,
``journal.jsonl``, one JSON object per line, and fsyncs; it never signs
anything: the signing key belongs to the agent. :class:`UpdateEvidence`
reads that journal in the agent and records each new line as one signed
bundle of kind ``update``. The byte offset of the next unread line is
kept in ``ctx.state`` after each bundle, so a line becomes evidence once
and a restart goes on where the last one stopped. A last line without its
newline (the runner died mid-write) is not read until it is complete; a
complete line that is not a journal entry is recorded as
``journal-unreadable`` (with its offset and digest), so a gap is visible,
never silent.

What the runner cannot see, because it has finished before the reboot,
is recorded here from the backend's status: ``booted`` (once per boot:
the version running), ``blessed`` (the version installed last now boots
and its boot entry was blessed by the health gate) and ``rolled-back``
(its entry ran out of tries and an older version booted instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from osiris.records import UpdateError, UpdateStatus

log = logging.getLogger("osiris.update_ab.evidence")

KIND = "update"
NAMESPACE = "update-ab"
STATE_KEY = "evidence"
#: The runner's steps (UPDATES.md: runner.py's journal).
JOURNAL_STEPS = frozenset({"found", "downloaded", "verified", "written", "read-back", "installed",
                           "reboot-scheduled", "refused", "failed", "interrupted"})
#: Steps recorded by the agent itself.
BOOT_STEPS = frozenset({"booted", "blessed", "rolled-back"})
# A journal line longer than this is not a step the runner wrote.
MAX_LINE = 1 << 20


def boot_identity() -> dict[str, Any]:
    """This boot: its id when /proc shows it, and when it started (the
    agent's sandbox hides /proc/sys; CLOCK_BOOTTIME needs nothing)."""
    ident: dict[str, Any] = {"started": round(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME))}
    try:
        ident["id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        pass
    return ident


def same_boot(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    if not a:
        return False
    if a.get("id") and b.get("id"):
        return a["id"] == b["id"]
    # Start times computed at different moments differ by the clock's
    # adjustments since; a reboot takes longer than this.
    return abs(int(a.get("started", 0)) - int(b.get("started", 0))) <= 30


class UpdateEvidence:
    """Follows the runner's journal and the boot state into signed
    evidence. ``status`` is the backend's ``status()`` (the boot entries
    and the booted version); ``journal`` the runner's journal path."""

    def __init__(self, ctx: Any, journal: Path, status: Callable[[], Awaitable[UpdateStatus]], *,
                 poll: float = 5.0, boot: Callable[[], dict[str, Any]] = boot_identity) -> None:
        self.ctx = ctx
        self.journal = Path(journal)
        self.status = status
        self.poll = poll
        self.boot = boot
        self.state = ctx.state(NAMESPACE)

    # -- the kept position ---------------------------------------------------------------

    def _kept(self) -> dict[str, Any]:
        return dict(self.state.get(STATE_KEY) or {})

    def _keep(self, **changes: Any) -> None:
        self.state.update(STATE_KEY, lambda old: {**(old or {}), **changes})

    async def _record(self, payload: dict[str, Any]) -> None:
        await self.ctx.evidence.record(KIND, payload)

    # -- the journal ---------------------------------------------------------------------

    def _read_from(self, offset: int, inode: int | None) -> tuple[int | None, int, list[tuple[int, bytes]]]:
        """Complete lines from ``offset`` (0 when the journal was replaced
        or cut shorter: a new journal): (inode, start offset, [(offset, line)])."""
        try:
            with open(self.journal, "rb") as f:
                st = os.fstat(f.fileno())
                if inode is not None and st.st_ino != inode or st.st_size < offset:
                    log.warning("%s: a new journal (replaced or shorter than %d bytes): reading it from the start",
                                self.journal, offset)
                    offset = 0
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return inode, offset, []
        lines, pos = [], offset
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # torn: the runner is writing it, or died writing it
            lines.append((pos, raw))
            pos += len(raw)
        return st.st_ino, offset, lines

    @staticmethod
    def _entry(raw: bytes, offset: int) -> dict[str, Any]:
        """A journal line as the bundle's payload; an unreadable line as a
        ``journal-unreadable`` payload naming what was wrong."""
        text = raw.rstrip(b"\r\n")
        problem = None
        entry: Any = None
        if len(text) > MAX_LINE:
            problem = f"line of {len(text)} bytes, longer than {MAX_LINE}"
        else:
            try:
                entry = json.loads(text)
            except ValueError as exc:
                problem = f"not JSON: {exc}"
        if problem is None:
            if not isinstance(entry, dict):
                problem = f"expected a JSON object, got {type(entry).__name__}"
            elif not isinstance(entry.get("step"), str) or not entry["step"]:
                problem = "no 'step'"
            elif not isinstance(entry.get("seq"), int) or isinstance(entry.get("seq"), bool):
                problem = "'seq' is not an integer"
            elif entry.get("version") is not None and not isinstance(entry.get("version"), str):
                problem = "'version' is not a string"
            elif not isinstance(entry.get("detail", {}), dict):
                problem = "'detail' is not an object"
        if problem is not None:
            return {"step": "journal-unreadable", "source": "journal", "offset": offset,
                    "sha256": hashlib.sha256(text).hexdigest(), "error": problem}
        return {"step": entry["step"], "source": "journal", "version": entry.get("version"), "seq": entry["seq"],
                "at": entry.get("at"), "offset": offset, "detail": entry.get("detail", {})}

    async def follow_journal(self) -> int:
        """Record every complete line not recorded yet; returns how many."""
        kept = self._kept()
        inode, start, lines = await self.ctx.run_blocking(self._read_from, int(kept.get("offset", 0)),
                                                          kept.get("inode"))
        if start != kept.get("offset", 0) or inode != kept.get("inode"):
            self._keep(offset=start, inode=inode)
        for offset, raw in lines:
            payload = self._entry(raw, offset)
            await self._record(payload)
            changes: dict[str, Any] = {"offset": offset + len(raw), "inode": inode}
            if payload["step"] == "installed" and payload.get("version"):
                # The outcome (blessed or rolled back) is decided at a later boot.
                changes["pending"] = {"version": payload["version"], "seq": payload["seq"]}
            self._keep(**changes)
        return len(lines)

    # -- the boot ------------------------------------------------------------------------

    async def _status(self) -> UpdateStatus | None:
        try:
            return await self.status()
        except UpdateError as exc:
            log.warning("update evidence: the boot state is not readable: %s", exc)
            return None

    async def follow_boot(self) -> list[str]:
        """Record ``booted`` once per boot, and the outcome of the last
        install once it is known; returns the steps recorded."""
        st = await self._status()
        if st is None or not st.configured or not st.booted_version:
            return []
        done: list[str] = []
        kept = self._kept()
        boot = self.boot()
        entries = {e.version: e for e in st.entries}
        booted_entry = next((e for e in st.entries if e.booted), entries.get(st.booted_version))
        if not same_boot(kept.get("boot"), boot):
            await self._record({"step": "booted", "source": "boot", "version": st.booted_version,
                                "entry": _entry_json(booted_entry), "boot": boot})
            self._keep(boot=boot)
            done.append("booted")
        pending = kept.get("pending")
        if pending:
            version = pending["version"]
            entry = entries.get(version)
            if st.booted_version == version and entry is not None and entry.state == "blessed":
                await self._record({"step": "blessed", "source": "boot", "version": version,
                                    "installed_seq": pending.get("seq"), "entry": _entry_json(entry), "boot": boot})
                self._keep(pending=None)
                done.append("blessed")
            elif st.booted_version != version and entry is not None and entry.state == "bad":
                await self._record({"step": "rolled-back", "source": "boot", "version": version,
                                    "booted_version": st.booted_version, "installed_seq": pending.get("seq"),
                                    "entry": _entry_json(entry), "boot": boot})
                self._keep(pending=None)
                done.append("rolled-back")
            # Otherwise: not rebooted yet, booted on trial, or its entry not
            # seen: decided later (a later install's line replaces it).
        return done

    # -- the loop ------------------------------------------------------------------------

    async def once(self) -> None:
        """One pass: the journal first (an install's ``installed`` line
        makes its outcome pending), then the boot state."""
        if self.ctx.evidence is None:
            return
        await self.follow_journal()
        await self.follow_boot()

    async def run(self) -> None:
        """Follow until cancelled (started by the plugin's osiris_startup,
        cancelled at shutdown). A pass that fails is logged and retried at
        the next poll: the kept offset means nothing is lost or repeated."""
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the agent runs on, the next pass retries
                log.error("update evidence: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.poll)


def _entry_json(entry: Any) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"version": entry.version, "state": entry.state, "tries_left": entry.tries_left,
            "tries_done": entry.tries_done, "file": entry.file}
