"""The update-ab plugin's hooks: its settings and the UpdateBackend.

The agent never writes a slot or the ESP itself. ``apply`` and ``check``
run the root-side runner (runner.py): with ``runner: systemd`` by writing
``<state dir>/request/request.json``, which ``osiris-update.path`` turns into a
start of ``osiris-update.service``; with ``runner: inline`` (tests, labs)
by running it as a child process. Either way the backend follows the
runner's ``status.json`` for progress and its answer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osiris import SettingsSection, hookimpl
from osiris.records import (
    BootEntry,
    Slot,
    UpdateCheck,
    UpdateError,
    UpdateProgress,
    UpdateResult,
    UpdateStatus,
)

from . import disk as gpt
from .esp import open_esp
from .evidence import UpdateEvidence
from .settings import NAME, Settings

log = logging.getLogger("osiris.update_ab")

RUNNER = [sys.executable, "-m", "osiris_update_ab.runner"]
TERMINAL = ("idle", "up-to-date", "installed", "reboot-scheduled", "refused", "failed")


def _time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


class AbBackend:
    """A/B slots on this appliance's disk, releases from a TUF repository."""

    name = NAME

    def __init__(self, settings: Settings, *, settings_file: Path | None = None, poll: float = 0.5,
                 deadline: float = 6 * 3600) -> None:
        self.s = settings
        self.settings_file = settings_file
        self.poll, self.deadline = poll, deadline

    # -- reading
    def _status_file(self) -> dict[str, Any]:
        try:
            data = json.loads((self.s.state_dir / "status.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _progress(self, st: dict[str, Any]) -> UpdateProgress:
        return UpdateProgress(phase=str(st.get("phase") or "idle"), version=st.get("version"),
                              bytes_done=int(st.get("bytes_done") or 0), bytes_total=st.get("bytes_total"),
                              rate=st.get("rate"), started=_time(st.get("started")), error=st.get("error"))

    def _disk(self, booted: str | None) -> tuple[list[Slot], list[BootEntry], str]:
        """Slots and entries read from the disk now (root, or an image file)."""
        try:
            disk = self.s.disk or (Path(f"/dev/disk/by-partlabel/{gpt.PREFIX}{booted}") if booted else None)
            if disk is None:
                return [], [], "the disk is unknown (no booted version)"
            if self.s.disk is None:
                from .runner import disk_of_label

                disk = disk_of_label(gpt.PREFIX + booted)
            slots = [Slot(name="AB"[i] if i < 2 else str(i), version=s.version, booted=s.version == booted,
                          device=f"{disk} partition {s.number} ({s.partition.label})")
                     for i, s in enumerate(gpt.slots(disk))]
            entries = [BootEntry(version=e.version, state=e.state, tries_left=e.tries_left, tries_done=e.tries_done,
                                 booted=e.version == booted, file=e.name) for e in open_esp(self.s.esp, disk).entries()]
            return slots, entries, ""
        except Exception as exc:  # noqa: BLE001 - status answers with what it could read, and says what it could not
            return [], [], f"the disk is not readable from here: {exc}"

    def _read_status(self) -> UpdateStatus:
        missing = self.s.missing()
        st = self._status_file()
        try:
            booted = gpt.booted_version(self.s.booted_version)
        except gpt.DiskError:
            booted = st.get("booted_version")
        slots, entries, why = self._disk(booted)
        snap = st.get("disk") if isinstance(st.get("disk"), dict) else {}
        if why and snap.get("slots") is not None:  # as the runner (root) last saw the disk
            slots = [Slot(name="AB"[i] if i < 2 else str(i), version=s.get("version"), booted=bool(s.get("booted")),
                          device=f"{snap.get('path')} partition {s.get('number')} ({s.get('label')})")
                     for i, s in enumerate(snap["slots"])]
            entries = [BootEntry(version=e["version"], state=e["state"], tries_left=e.get("tries_left"),
                                 tries_done=e.get("tries_done"), booted=e["version"] == booted, file=e["file"])
                       for e in snap.get("entries", [])]
            why = f"slots and entries as osiris-update.service last saw them ({st.get('updated')})"
        running = self._progress(st) if st.get("phase") not in (None, *TERMINAL) else None
        detail = f"not configured: plugins.{NAME}.{', '.join(missing)} not set" if missing else why
        if st.get("error") and st.get("phase") in ("refused", "failed"):
            detail = (detail + "; " if detail else "") + f"last run {st['phase']}: {st['error']}"
        return UpdateStatus(backend=NAME, configured=not missing, booted_version=booted, slots=slots,
                            entries=entries, last_check=_time(st.get("last_check")), available=st.get("available"),
                            running=running, detail=detail)

    async def status(self) -> UpdateStatus:
        return await asyncio.to_thread(self._read_status)

    # -- asking the runner
    def _need_configured(self) -> None:
        missing = self.s.missing()
        if missing:
            raise UpdateError(f"updates are not configured: plugins.{NAME}.{', '.join(missing)} not set")

    async def _run(self, action: str, reboot: bool, progress: Callable[[UpdateProgress], None] | None) -> dict:
        self._need_configured()
        if self.s.runner == "inline":
            self.s.state_dir.mkdir(parents=True, exist_ok=True)
            return await self._inline(action, reboot, progress)
        return await self._request(action, reboot, progress)

    def _settings_path(self) -> Path:
        if self.settings_file is not None:
            return self.settings_file
        path = self.s.state_dir / "settings.json"  # what the inline runner reads: this section, as the agent has it
        path.write_text(self.s.model_dump_json())
        return path

    async def _inline(self, action: str, reboot: bool, progress) -> dict:
        args = [*RUNNER, "--settings", str(self._settings_path()), "--reboot" if reboot else "--no-reboot", action]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env={**os.environ})
        comm = asyncio.ensure_future(proc.communicate())
        while not comm.done():
            await asyncio.wait([comm], timeout=self.poll)
            if progress is not None:
                progress(self._progress(self._status_file()))
        out, err = comm.result()
        if proc.returncode != 0:
            st = self._status_file()
            lines = err.decode(errors="replace").strip().splitlines()
            msg = lines[-1].removeprefix("osiris-update-install: ") if lines else f"exit {proc.returncode}"
            raise UpdateError(msg, refused=st.get("phase") == "refused")
        return json.loads(out.decode().strip().splitlines()[-1])

    async def _request(self, action: str, reboot: bool, progress) -> dict:
        rid = uuid.uuid4().hex
        req = self.s.state_dir / "request" / "request.json"
        tmp = req.with_name(f".request.{rid}")
        try:
            tmp.write_text(json.dumps({"id": rid, "action": action, "reboot": reboot}))
            os.chmod(tmp, 0o644)  # root reads it without CAP_DAC_OVERRIDE
            os.replace(tmp, req)
        except OSError as exc:
            raise UpdateError(f"{req.parent}: cannot write the request ({exc.strerror or exc}); "
                              "is osiris.update enabled (it makes that directory)?") from None
        end = time.monotonic() + self.deadline
        while time.monotonic() < end:
            await asyncio.sleep(self.poll)
            st = self._status_file()
            if st.get("request") == rid and progress is not None:
                progress(self._progress(st))
            if st.get("request") == rid and st.get("phase") in ("refused", "failed"):
                raise UpdateError(str(st.get("error")), refused=st.get("phase") == "refused")
            if st.get("done") == rid:
                return st.get("result") or {}
        raise UpdateError(f"osiris-update.service did not answer request {rid} in {self.deadline:.0f} s "
                          f"({req} not taken: is osiris-update.path enabled?)")

    async def check(self) -> UpdateCheck:
        out = await self._run("check", False, None)
        return UpdateCheck(current=out.get("current"), available=out.get("available"))

    async def apply(self, *, reboot: bool, progress: Callable[[UpdateProgress], None] | None = None) -> UpdateResult:
        out = await self._run("apply", reboot, progress)
        return UpdateResult(installed=out.get("installed"), reboot_at=_time(out.get("reboot_at")),
                            detail=str(out.get("detail") or ""))


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "A/B updates from TUF-signed releases (docs/updates.md)")


@hookimpl
def osiris_update_backends(ctx):
    return AbBackend(ctx.settings(NAME))


async def check_every(backend: AbBackend, interval: float) -> None:
    """Ask for a check now and every ``interval`` seconds (modules/osiris-update.nix
    has no timer: the agent asks). A failed check is in the runner's journal,
    hence in the evidence; here it is logged and the loop goes on."""
    while True:
        try:
            await backend.check()
        except UpdateError as exc:
            log.warning("update check: %s", exc)
        await asyncio.sleep(interval)


_TASKS: dict[int, list[asyncio.Task]] = {}


@hookimpl
async def osiris_startup(ctx):
    """When updates are configured: follow the runner's journal and the boot
    state into signed evidence (evidence.py), and check every check_interval."""
    s: Settings = ctx.settings(NAME)
    if s.missing():
        return
    backend = AbBackend(s)
    tasks = [asyncio.ensure_future(check_every(backend, s.check_interval))]
    if ctx.evidence is not None:
        tasks.append(asyncio.ensure_future(UpdateEvidence(ctx, s.state_dir / "journal.jsonl", backend.status).run()))
    _TASKS[id(ctx)] = tasks


@hookimpl
async def osiris_shutdown(ctx):
    tasks = _TASKS.pop(id(ctx), [])
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
