"""The root side of updates: what ``osiris-update.service`` runs
(``osiris-update-install``, or ``python -m osiris_update_ab.runner``).

The agent stays in its sandbox; this process alone writes slots and the
ESP. It takes the plugin's settings file, asks the TUF repository for a
newer release (python-tuf's ngclient, release.py), installs it in one
streamed pass (install.py) and reports through two files in the state
directory, which the agent reads (docs/updates.md):

- ``status.json``, replaced atomically: phase, version, bytes done/total,
  rate, started, error (and the last check, the available version);
- ``journal.jsonl``, appended and fsynced, one JSON object per line:
  ``{"seq", "at", "step", "version", "detail"}``, step one of found,
  downloaded, verified, written, read-back, installed, reboot-scheduled,
  refused, failed, interrupted. The agent turns each line into signed
  evidence.

A run that finds status.json in a running phase journals ``interrupted``
first (the previous run was killed) and then starts the install again from
the beginning, which is always safe (install.py).

Test-only pause hook: with ``OSIRIS_UPDATE_TEST_PAUSE=<stage>`` (one of
install.STAGES) the runner writes ``<state dir>/paused`` holding the stage
when it gets there and waits until that file is removed, so a test can
SIGKILL it at exactly that point. Nothing else reads the variable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from . import disk as gpt
from .esp import EspError, open_esp
from .install import CHUNK, STAGES, InstallError, fsync_path, install
from .release import ReleaseClient, RepositoryUnreachable, UpdateRefused
from .settings import Settings, SettingsError, load

PAUSE_ENV = "OSIRIS_UPDATE_TEST_PAUSE"
RUNNING = ("checking", "downloading", "writing", "read-back", "installing")
JOURNAL_STEPS = {"verified": ("downloaded", "verified"), "written": ("written",), "read-back": ("read-back",),
                 "installed": ("installed",)}


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Journal:
    """journal.jsonl: append-only, each line fsynced before the step is
    taken as done; ``seq`` continues from the last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        last = self.last()
        if last is not None:
            self.seq = int(last.get("seq", 0))

    def last(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 65536))
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-append
        return None

    def append(self, step: str, version: str | None, detail: dict[str, Any] | None = None) -> dict[str, Any]:
        self.seq += 1
        rec = {"seq": self.seq, "at": utcnow(), "step": step, "version": version, "detail": detail or {}}
        with open(self.path, "ab") as f:
            f.write(json.dumps(rec, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return rec


class Status:
    """status.json, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = self.read(path)
        self._last_write = 0.0

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def set(self, *, force: bool = True, **fields: Any) -> None:
        self.data.update(fields)
        self.data["updated"] = utcnow()
        now = time.monotonic()
        if not force and now - self._last_write < 0.5:
            return
        self._last_write = now
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(self.data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_path(self.path.parent)


def reboot_time(window: str | None, now: dt.datetime) -> dt.datetime:
    """When to reboot: ``now`` inside the window (local HH:MM-HH:MM, may
    wrap midnight) or without one, else the window's next start."""
    if window is None:
        return now
    (sh, sm), (eh, em) = ((int(x) for x in part.split(":")) for part in window.split("-"))
    start, end = now.replace(hour=sh, minute=sm, second=0, microsecond=0), now.replace(hour=eh, minute=em, second=0, microsecond=0)
    minute = now.hour * 60 + now.minute
    a, b = sh * 60 + sm, eh * 60 + em
    inside = a <= minute < b if a <= b else (minute >= a or minute < b)
    if inside:
        return now
    del end
    return start if start > now else start + dt.timedelta(days=1)


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = settings.state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.dir / "journal.jsonl")
        self.status = Status(self.dir / "status.json")
        self._pause_at = os.environ.get(PAUSE_ENV) or None
        if self._pause_at is not None and self._pause_at not in STAGES:
            raise SettingsError(f"{PAUSE_ENV}={self._pause_at!r}: expected one of {', '.join(STAGES)}")

    # -- the parts
    def client(self) -> ReleaseClient:
        missing = self.s.missing()
        if missing:
            raise SettingsError(f"plugins.update-ab: {', '.join(missing)} not set: updates are not configured")
        return ReleaseClient(url=self.s.repository, metadata_dir=self.dir / "metadata", trusted_root=self.s.trusted_root,
                             hardware=self.s.hardware, cafile=self.s.cafile)

    def booted(self) -> str:
        return gpt.booted_version(self.s.booted_version)

    def disk(self, booted: str) -> Path:
        if self.s.disk is not None:
            return self.s.disk
        return disk_of_label(gpt.PREFIX + booted)

    def _stage(self, version: str):
        def stage(name: str, detail: dict) -> None:
            for step in JOURNAL_STEPS.get(name, ()):
                self.journal.append(step, version, detail)
            if name == "labelled" or name == "uki-partial":
                self.status.set(phase="installing")
            if name == self._pause_at:
                marker = self.dir / "paused"
                marker.write_text(name)
                deadline = time.monotonic() + 600
                while marker.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        return stage

    def _progress(self, version: str, started: float):
        def progress(phase: str, done: int, total: int | None) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            self.status.set(force=False, phase=phase, version=version, bytes_done=done, bytes_total=total,
                            rate=round(done / elapsed, 1) if phase == "writing" else self.status.data.get("rate"))
        return progress

    # -- the commands
    def note_interrupted(self) -> None:
        phase = self.status.data.get("phase")
        if phase in RUNNING:
            self.journal.append("interrupted", self.status.data.get("version"),
                                {"phase": phase, "bytes_done": self.status.data.get("bytes_done")})
            self.status.set(phase="interrupted", error=f"the previous run stopped while {phase}")

    def check(self) -> dict[str, Any]:
        self.note_interrupted()
        booted = self.booted()
        self.status.set(phase="checking", version=None, error=None)
        try:
            release = self.client().latest(newer_than=booted)
        except Exception as exc:
            self._fail(None, exc)
            raise
        available = release.version if release else None
        if available and self.status.data.get("available") != available:
            self.journal.append("found", available, _release_detail(release))
        self.status.set(phase="idle", last_check=utcnow(), available=available, booted_version=booted)
        return {"current": booted, "available": available}

    def apply(self, *, reboot: bool) -> dict[str, Any]:
        self.note_interrupted()
        booted = self.booted()
        started = time.monotonic()
        self.status.set(phase="checking", version=None, bytes_done=0, bytes_total=None, rate=None,
                        started=utcnow(), error=None, booted_version=booted)
        version = None
        try:
            client = self.client()
            release = client.latest(newer_than=booted)
            self.status.set(last_check=utcnow(), available=release.version if release else None)
            if release is None:
                self.status.set(phase="up-to-date")
                return {"installed": None, "reboot_at": None, "detail": f"{booted} is the newest release"}
            version = release.version
            self.journal.append("found", version, _release_detail(release))
            disk = self.disk(booted)
            esp = open_esp(self.s.esp, disk)
            self.status.set(phase="downloading", version=version, bytes_total=release.image.size)
            result = install(disk, esp, booted=booted, version=version, tries=self.s.tries, image=release.image,
                             image_chunks=client.stream(release.image, CHUNK), uki=release.uki,
                             uki_chunks=client.stream(release.uki, CHUNK), progress=self._progress(version, started),
                             stage=self._stage(version), source_verified=True)  # stream() checks the sha256
        except Exception as exc:
            self._fail(version, exc)
            raise
        rate = round(result.image_bytes / max(result.seconds, 1e-6), 1)
        self.status.set(phase="installed", bytes_done=result.image_bytes, rate=rate)
        at = None
        if reboot:
            at = self.schedule_reboot(version)
        return {"installed": version, "reboot_at": at, "detail": f"{result.entry} in slot {result.slot}, on trial"}

    def schedule_reboot(self, version: str) -> str:
        when = reboot_time(self.s.reboot_window, dt.datetime.now().astimezone())
        at = when.strftime("%Y-%m-%d %H:%M:%S")
        cmd = [part.replace("{at}", at) for part in self.s.reboot_command]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"reboot: {cmd[0]}: {exc}") from None
        if res.returncode != 0:
            raise InstallError(f"reboot: {' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[-300:]}")
        self.journal.append("reboot-scheduled", version, {"at": when.isoformat(), "window": self.s.reboot_window})
        self.status.set(phase="reboot-scheduled", reboot_at=when.isoformat())
        return when.isoformat()

    def snapshot(self) -> None:
        """The slots and entries as this run leaves them, into status.json:
        the agent (no access to the disk) shows them from there."""
        try:
            booted = self.booted()
            disk = self.disk(booted)
            slots = [{"number": s.number, "label": s.partition.label, "version": s.version, "booted": s.version == booted}
                     for s in gpt.slots(disk)]
            entries = [{"file": e.name, "version": e.version, "state": e.state, "tries_left": e.tries_left,
                        "tries_done": e.tries_done} for e in open_esp(self.s.esp, disk).entries()]
        except (gpt.DiskError, EspError, OSError) as exc:
            self.status.set(disk={"error": str(exc)})
            return
        self.status.set(disk={"path": str(disk), "slots": slots, "entries": entries})

    def _fail(self, version: str | None, exc: BaseException) -> None:
        step = "refused" if refused(exc) else "failed"
        self.journal.append(step, version, {"error": str(exc), "kind": type(exc).__name__})
        self.status.set(phase=step, error=str(exc))


def refused(exc: BaseException) -> bool:
    """A refusal (an attack, a rule) rather than a failure (the network, the disk)."""
    if isinstance(exc, RepositoryUnreachable):
        return False
    return isinstance(exc, UpdateRefused) or bool(getattr(exc, "refused", False))


def _release_detail(release) -> dict[str, Any]:
    return {"hardware": release.hardware, "uki": {"path": release.uki.path, "sha256": release.uki.sha256},
            "image": {"path": release.image.path, "length": release.image.length, "sha256": release.image.sha256,
                      "compression": release.image.compression, "size": release.image.size,
                      "image_sha256": release.image.image_sha256}}


def disk_of_label(label: str) -> Path:
    """The whole disk holding the partition labelled ``label`` (by udev's
    by-partlabel link and sysfs)."""
    link = Path("/dev/disk/by-partlabel") / label
    try:
        part = link.resolve(strict=True)
        parent = (Path("/sys/class/block") / part.name).resolve(strict=True).parent.name
    except OSError:
        raise gpt.DiskError(f"{link}: not found; set the plugin's disk") from None
    return Path("/dev") / parent


# Named errors, printed without a traceback; anything else is a bug.
EXPECTED = (SettingsError, gpt.DiskError, EspError, InstallError, UpdateRefused, OSError)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--settings", "settings_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The plugin's settings: the agent's config (JSON) or its plugins.update-ab section.")
@click.option("--reboot/--no-reboot", default=False, help="apply: schedule the reboot into the new version.")
@click.argument("action", type=click.Choice(["check", "apply", "request"]), default="request")
def main(settings_path: Path, reboot: bool, action: str) -> None:
    """check: ask the repository; apply: install the newest release into
    the inactive slot; request (default): do what <state dir>/request/request.json
    asks (the agent writes it; osiris-update.path starts this)."""
    try:
        runner = Runner(load(settings_path))
        request_id = None
        if action == "request":
            req = take_request(runner.dir)
            if req is None:
                click.echo("no request")
                return
            action, reboot, request_id = req["action"], bool(req.get("reboot")), req.get("id")
            runner.status.set(request=request_id)
        try:
            out = runner.check() if action == "check" else runner.apply(reboot=reboot)
        finally:
            runner.snapshot()
        runner.status.set(result=out, done=request_id)
        click.echo(json.dumps(out, sort_keys=True))
    except EXPECTED as exc:
        click.echo(f"osiris-update-install: {exc}", err=True)
        sys.exit(2 if isinstance(exc, SettingsError) else 1)


def take_request(state_dir: Path) -> dict[str, Any] | None:
    """Consume ``request/request.json`` ({"id", "action": check|apply,
    "reboot"}): the one directory under the state directory the agent may
    write (modules/osiris-update.nix)."""
    path = state_dir / "request" / "request.json"
    try:
        req = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise SettingsError(f"{path}: {exc}") from None
    path.unlink(missing_ok=True)
    if not isinstance(req, dict) or req.get("action") not in ("check", "apply"):
        raise SettingsError(f"{path}: expected {{\"action\": \"check\"|\"apply\", \"reboot\": bool, \"id\": str}}")
    req.setdefault("id", uuid.uuid4().hex)
    return req


if __name__ == "__main__":
    main()
