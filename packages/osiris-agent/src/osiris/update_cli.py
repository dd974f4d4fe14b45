"""``osiris update status|check|apply``: the appliance's own updates.

The core knows only the update protocol (``osiris.records.UpdateBackend``,
plugin API 2.2): slots, boot entries and repositories are the backend's
business (the update-ab plugin, docs/updates.md). Exit statuses: 0 done
(``status`` also when no backend is configured, saying so), 1 the backend
refused or failed (its message says what and why), 2 nothing configured
to update from (``check``/``apply``) or two backends, 3 a plugin that
breaks the plugin API (a backend that raises anything but UpdateError).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import click

from .plugins import PluginError
from .records import UpdateBackend, UpdateError, UpdateProgress, UpdateStatus

EXIT_FAILED = 1
EXIT_NOT_CONFIGURED = 2
EXIT_PLUGIN = 3

NOT_CONFIGURED = ("no update backend is configured: no plugin answers osiris_update_backends "
                  "(install and configure one, e.g. update-ab: docs/updates.md)")


class _Exit(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _backend(state: Any) -> tuple[str, UpdateBackend] | None:
    """The one configured backend and its plugin, or None."""
    loaded = state.loaded()
    try:
        found = loaded.pm.collect("osiris_update_backends", UpdateBackend, ctx=loaded.ctx)
    except PluginError as exc:
        raise _Exit(str(exc), EXIT_PLUGIN) from None
    if len(found) > 1:
        names = ", ".join(f"{b.name} (plugin {p!r})" for p, b in found)
        raise _Exit(f"more than one update backend is configured: {names}; keep one (OSIRIS_DISABLE_PLUGINS "
                    "or the plugins' settings)", EXIT_NOT_CONFIGURED)
    return found[0] if found else None


def _call(plugin: str, backend: UpdateBackend, what: str, coro: Any) -> Any:
    """Run one backend coroutine: UpdateError is the backend's answer
    (exit 1, its message); anything else is a bug in the plugin (exit 3)."""
    try:
        return asyncio.run(coro)
    except UpdateError as exc:
        word = "refused" if exc.refused else "failed"
        raise _Exit(f"update {what} {word}: {exc}", EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise _Exit(f"update {what}: interrupted (an install already handed to the update service goes on; "
                    "`osiris update status` shows it)", 130) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, named, never a traceback
        raise _Exit(f"plugin {plugin!r}: update backend {backend.name!r}: {what} failed: "
                    f"{type(exc).__name__}: {exc}", EXIT_PLUGIN) from None


def _typed(plugin: str, value: Any, typ: type, what: str) -> Any:
    if not isinstance(value, typ):
        raise _Exit(f"plugin {plugin!r}: update backend {what} returned {type(value).__name__}, "
                    f"expected {typ.__name__} (plugin API 2.2)", EXIT_PLUGIN)
    return value


def size(n: float | None) -> str:
    """Bytes for a person: 512.0 MiB."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_text(p: UpdateProgress) -> str:
    """One line: phase, version, bytes of total, rate, ETA."""
    parts = [p.phase + (f" {p.version}" if p.version else "")]
    if p.bytes_total:
        parts.append(f"{size(p.bytes_done)} of {size(p.bytes_total)} ({100 * p.bytes_done / p.bytes_total:.0f}%)")
    elif p.bytes_done:
        parts.append(size(p.bytes_done))
    if p.rate:
        parts.append(f"{size(p.rate)}/s")
    eta = p.eta()
    if eta is not None and p.bytes_done < (p.bytes_total or 0):
        parts.append(f"ETA {duration(eta)}")
    if p.error:
        parts.append(f"error: {p.error}")
    return ", ".join(parts)


class ProgressView:
    """Follows a backend's progress on ``out``: on a terminal one bar
    redrawn in place (at most 10 times a second); otherwise plain lines, one
    at each phase and each tenth of the bytes. Thread-safe: a backend may
    report from its own thread."""

    WIDTH = 28

    def __init__(self, out: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.tty, self.clock = out, tty, clock
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._tenth = -1
        self._drawn = 0.0
        self._open = False

    def __call__(self, p: UpdateProgress) -> None:
        with self._lock:
            if self.tty:
                self._bar(p)
            else:
                self._line(p)

    def _bar(self, p: UpdateProgress) -> None:
        now = self.clock()
        new_phase = p.phase != self._phase
        if new_phase and self._open:
            self.out.write("\n")
        if not new_phase and now - self._drawn < 0.1 and p.bytes_done != p.bytes_total:
            return
        self._phase, self._drawn = p.phase, now
        frac = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        filled = int(self.WIDTH * min(1.0, frac))
        bar = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] " if p.bytes_total else ""
        self.out.write(f"\r\x1b[K{bar}{progress_text(p)}")
        self.out.flush()
        self._open = True

    def _line(self, p: UpdateProgress) -> None:
        tenth = int(10 * p.bytes_done / p.bytes_total) if p.bytes_total else -1
        if p.phase == self._phase and tenth == self._tenth and not p.error:
            return
        self._phase, self._tenth = p.phase, tenth
        self.out.write(progress_text(p) + "\n")
        self.out.flush()

    def close(self) -> None:
        with self._lock:
            if self._open:
                self.out.write("\n")
                self.out.flush()
                self._open = False


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"


def status_text(s: UpdateStatus) -> str:
    lines = [f"update backend  {s.backend}" + ("" if s.configured else " (not configured)")]
    if s.detail:
        lines.append(f"                {s.detail}")
    lines.append(f"booted version  {s.booted_version or 'unknown'}")
    lines.append(f"last check      {_when(s.last_check)}")
    lines.append(f"available       {s.available or ('nothing newer' if s.last_check else 'not checked yet')}")
    lines.append(f"install         {progress_text(s.running) if s.running else 'none running'}")
    if s.slots:
        lines += ["", "SLOT  VERSION  BOOTED  DEVICE"]
        lines += [f"{sl.name}  {sl.version or '(empty)'}  {'yes' if sl.booted else 'no'}  {sl.device}".rstrip()
                  for sl in s.slots]
    if s.entries:
        lines += ["", "BOOT ENTRY  STATE  TRIES LEFT  BOOTED  FILE"]
        lines += [f"{e.version}  {e.state}  {'' if e.tries_left is None else e.tries_left}  "
                  f"{'yes' if e.booted else 'no'}  {e.file}".rstrip() for e in s.entries]
    return "\n".join(_align(lines)) + "\n"


def _align(lines: list[str]) -> list[str]:
    """Columns of each table block (lines with two-space separators after a
    blank line) padded to their widest cell."""
    out: list[str] = []
    block: list[list[str]] = []

    def flush() -> None:
        if block:
            widths = [max(len(r[i]) for r in block if i < len(r)) for i in range(max(map(len, block)))]
            out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in block)
            block.clear()

    in_table = False
    for line in lines:
        if not line:
            flush()
            in_table = True
            out.append(line)
        elif in_table:
            block.append(line.split("  "))
        else:
            out.append(line)
    flush()
    return out


@click.group("update")
def update_group() -> None:
    """The appliance's own updates: status, check, apply (docs/updates.md).

    Exit statuses: 0 done, 1 refused or failed (the message says what and
    why), 2 no update backend configured (check, apply), 3 a plugin that
    breaks the plugin API."""


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except _Exit as exc:
        click.echo(f"osiris: {exc}", err=True)
        sys.exit(exc.code)


def _configured(state: Any, what: str) -> tuple[str, UpdateBackend]:
    found = _backend(state)
    if found is None:
        raise _Exit(f"update {what}: {NOT_CONFIGURED}", EXIT_NOT_CONFIGURED)
    plugin, backend = found
    st = _typed(plugin, _call(plugin, backend, "status", backend.status()), UpdateStatus, "status")
    if not st.configured:
        raise _Exit(f"update {what}: backend {backend.name!r} is not configured" +
                    (f": {st.detail}" if st.detail else ""), EXIT_NOT_CONFIGURED)
    return plugin, backend


@update_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (configured, booted_version, slots, ...).")
@click.pass_obj
def update_status(state: Any, as_json: bool) -> None:
    """Booted version, slots, boot entries (blessed, trial, bad; tries
    left), last check, available version, a running install. Reads only."""

    def go() -> None:
        found = _backend(state)
        if found is None:
            st = UpdateStatus(backend="", configured=False, detail=NOT_CONFIGURED)
            out = {**st.to_json(), "backend": None}
        else:
            plugin, backend = found
            st = _typed(plugin, _call(plugin, backend, "status", backend.status()), UpdateStatus, "status")
            out = st.to_json()
        if as_json:
            click.echo(json.dumps(out, indent=2))
        elif found is None:
            click.echo(NOT_CONFIGURED)
        else:
            click.echo(status_text(st), nl=False)

    _run(go)


@update_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (current, available, checked_at).")
@click.pass_obj
def update_check(state: Any, as_json: bool) -> None:
    """Ask the release repository for a newer version (installs nothing)."""
    from .records import UpdateCheck

    def go() -> None:
        plugin, backend = _configured(state, "check")
        res = _typed(plugin, _call(plugin, backend, "check", backend.check()), UpdateCheck, "check")
        if as_json:
            click.echo(json.dumps(res.to_json(), indent=2))
        elif res.available:
            click.echo(f"version {res.available} is available (booted: {res.current or 'unknown'}); "
                       "`osiris update apply` installs it")
        else:
            click.echo(f"up to date: {res.current or 'unknown'} is the newest release for this appliance")

    _run(go)


@update_group.command("apply")
@click.option("--reboot", is_flag=True, help="Schedule the reboot into the new version (in the maintenance window).")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object (progress still on stderr).")
@click.pass_obj
def update_apply(state: Any, reboot: bool, as_json: bool) -> None:
    """Install the newest release into the slot not booted, on trial:
    progress (bytes, rate, ETA) on stderr, a bar on a terminal."""
    from .records import UpdateResult

    def go() -> None:
        plugin, backend = _configured(state, "apply")
        err = sys.stderr
        view = ProgressView(err, tty=err.isatty())
        try:
            res = _typed(plugin, _call(plugin, backend, "apply", backend.apply(reboot=reboot, progress=view)),
                         UpdateResult, "apply")
        finally:
            view.close()
        if as_json:
            click.echo(json.dumps(res.to_json(), indent=2))
        elif res.installed is None:
            click.echo(f"nothing to install: {res.detail or 'already up to date'}")
        else:
            when = (f"reboot into it scheduled for {_when(res.reboot_at)}" if res.reboot_at is not None
                    else "not rebooting: `osiris update apply --reboot` or a reboot boots it on trial")
            click.echo(f"installed {res.installed} on trial; {when}" + (f" ({res.detail})" if res.detail else ""))

    _run(go)
