"""The appliance-selfcheck plugin: checks (and one runbook) for the
appliance itself, target kind ``local``."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from osiris import CheckSpec, Risk, RunbookSpec, SettingsSection, Severity, Status, Verdict, hookimpl

from .boot import evaluate_boot, probe_boot
from .timex import read_clock_state

NAME = "appliance-selfcheck"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_free_percent: float = Field(default=10.0, ge=0, le=100, description="Minimum free space on the state directory, percent")
    min_free_mib: int = Field(default=1024, ge=0, description="Minimum free space on the state directory, MiB")
    max_clock_error_ms: float = Field(default=500.0, gt=0, description="Largest acceptable kernel clock max error, ms")
    key_paths: list[Path] = Field(default_factory=list,
                                  description="Key files to check besides those in the evidence key directory")


# -- storage -----------------------------------------------------------------


def probe_free_space(params: Mapping[str, Any]) -> dict[str, Any]:
    path = params["path"]
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize  # what an unprivileged writer can use
    return {
        "path": str(path),
        "total_bytes": total,
        "free_bytes": free,
        "free_percent": round(100.0 * free / total, 2) if total else 0.0,
    }


def evaluate_free_space(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    pct, free_mib = facts["free_percent"], facts["free_bytes"] // (1024 * 1024)
    if pct < params["min_free_percent"] or free_mib < params["min_free_mib"]:
        return Verdict(
            Status.FAIL,
            f"{facts['path']}: {free_mib} MiB free ({pct}%), below the minimum of "
            f"{params['min_free_mib']} MiB and {params['min_free_percent']}%",
        )
    return Verdict(Status.PASS, f"{facts['path']}: {free_mib} MiB free ({pct}%)")


# -- clock ---------------------------------------------------------------------


def probe_clock(_params: Mapping[str, Any]) -> dict[str, Any]:
    return read_clock_state()


def evaluate_clock(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    if not facts["synchronized"]:
        return Verdict(Status.FAIL, f"kernel clock is not synchronised (state {facts['state']}); audit timestamps cannot be trusted")
    err_ms = facts["maxerror_us"] / 1000
    if err_ms > params["max_clock_error_ms"]:
        return Verdict(Status.FAIL, f"kernel clock max error {err_ms:.0f} ms exceeds {params['max_clock_error_ms']:g} ms")
    return Verdict(Status.PASS, f"clock synchronised, max error {err_ms:.1f} ms")


# -- permissions -------------------------------------------------------------------


def data_params(paths: Any) -> dict[str, Any]:
    """The files the permissions check looks at, from ``ctx.paths``: where
    the agent really keeps them (``evidence.directory`` may move the log)."""
    return {"state_dir": str(paths.state_dir), "evidence_dir": str(paths.evidence_dir),
            "databases": [str(paths.state_db), str(paths.evidence_log)], "key_dir": str(paths.key_dir)}


def _key_files(params: Mapping[str, Any]) -> list[Path]:
    key_dir = Path(params["key_dir"])
    found = sorted(p for p in key_dir.iterdir() if p.is_file()) if key_dir.is_dir() else []
    return found + [Path(p) for p in params.get("key_paths", [])]


def _database_files(params: Mapping[str, Any]) -> list[Path]:
    """Each database that exists and its SQLite companions (``-wal``, ``-shm``)."""
    out: list[Path] = []
    for db in map(Path, params["databases"]):
        out.extend(sorted(db.parent.glob(glob.escape(db.name) + "*")) if db.parent.is_dir() else [])
    return out


# Mode bits that must be clear, per kind of path: the check flags them and
# the runbook clears exactly these.
FORBIDDEN = {
    "state_dir": stat.S_IRWXO | stat.S_IWGRP,
    "evidence_dir": stat.S_IRWXO | stat.S_IWGRP,
    "database": stat.S_IRWXO | stat.S_IWGRP,
    "key": stat.S_IRWXG | stat.S_IRWXO,
}


def probe_permissions(params: Mapping[str, Any]) -> dict[str, Any]:
    """Mode and owner of the state directory, the evidence directory, the
    database files and keys.

    Keys must be owner-only (0600 or stricter) and owned by the agent's
    user; the state directory, the state database and the evidence log (and
    its directory, once it exists) must not be reachable by others. A
    missing configured key file is a problem too.
    """
    state_dir = Path(params["state_dir"])
    evidence_dir = Path(params["evidence_dir"])
    uid = os.geteuid()
    entries = []

    def add(path: Path, kind: str) -> None:
        forbidden = FORBIDDEN[kind]
        try:
            st = path.lstat()
        except FileNotFoundError:
            entries.append({"path": str(path), "kind": kind, "problems": ["missing"]})
            return
        mode = stat.S_IMODE(st.st_mode)
        problems = []
        if stat.S_ISLNK(st.st_mode):
            problems.append("is a symbolic link")
        if mode & forbidden:
            problems.append(f"mode {mode:04o}: bits {mode & forbidden:04o} must be clear")
        if st.st_uid != uid:
            problems.append(f"owned by uid {st.st_uid}, not the agent (uid {uid})")
        entries.append({"path": str(path), "kind": kind, "mode": f"{mode:04o}", "uid": st.st_uid, "problems": problems})

    add(state_dir, "state_dir")
    if evidence_dir.is_dir():  # created with the log; evidence may be off
        add(evidence_dir, "evidence_dir")
    for db in _database_files(params):
        add(db, "database")
    for key in _key_files(params):
        add(key, "key")
    return {"entries": entries}


def evaluate_permissions(facts: Mapping[str, Any], _params: Mapping[str, Any]) -> Verdict:
    bad = [e for e in facts["entries"] if e["problems"]]
    if bad:
        return Verdict(Status.FAIL, "; ".join(f"{e['path']}: {', '.join(e['problems'])}" for e in bad))
    keys = sum(1 for e in facts["entries"] if e["kind"] == "key")
    return Verdict(Status.PASS, f"{len(facts['entries'])} paths private ({keys} keys)")


def fix_permissions(params: Mapping[str, Any]) -> dict[str, Any]:
    """Idempotent: take group/other bits off keys, other bits (and group
    write) off the directories and databases. Never changes owners:
    a key owned by someone else needs a human."""
    facts = probe_permissions(params)
    changed = []
    for e in facts["entries"]:
        if "mode" not in e:
            continue
        mode = int(e["mode"], 8)
        forbidden = FORBIDDEN[e["kind"]]
        if mode & forbidden:
            os.chmod(e["path"], mode & ~forbidden, follow_symlinks=False)
            changed.append(e["path"])
    return {"changed": changed}


# -- hooks ------------------------------------------------------------------------


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "Thresholds and key paths for the appliance's own checks")


@hookimpl
def osiris_checks(ctx):
    s: Settings = ctx.settings(NAME)
    state_dir = str(ctx.paths.state_dir)
    return [
        CheckSpec(
            id="appliance.storage.state_free_space",
            title="State directory has room for evidence and state",
            target_kind="local",
            hipaa=("164.312(b)", "164.316(b)(2)(i)"),
            severity=Severity.HIGH,
            interval=300,
            probe=probe_free_space,
            evaluate=evaluate_free_space,
            params={"path": state_dir, "min_free_percent": s.min_free_percent, "min_free_mib": s.min_free_mib},
            description="Audit records and six years of evidence need room; a full disk silently stops both.",
        ),
        CheckSpec(
            id="appliance.clock.synchronized",
            title="Appliance clock is synchronised",
            target_kind="local",
            hipaa=("164.312(b)", "164.312(c)(1)"),
            severity=Severity.HIGH,
            interval=300,
            probe=probe_clock,
            evaluate=evaluate_clock,
            params={"max_clock_error_ms": s.max_clock_error_ms},
            description="Evidence timestamps are only as good as the clock (kernel adjtimex state).",
        ),
        CheckSpec(
            id="appliance.files.private",
            title="Keys and state are private to the agent",
            target_kind="local",
            hipaa=("164.312(a)(1)", "164.312(c)(1)"),
            severity=Severity.CRITICAL,
            interval=300,
            probe=probe_permissions,
            evaluate=evaluate_permissions,
            params={**data_params(ctx.paths), "key_paths": [str(p) for p in s.key_paths]},
            description="Signing keys owner-only (0600); state and evidence directories and databases "
                        "closed to others.",
        ),
        CheckSpec(
            id="appliance.boot.newest_version",
            title="Appliance runs its newest installed version (no fallback)",
            target_kind="local",
            hipaa=("164.308(a)(7)(i)",),
            severity=Severity.HIGH,
            interval=300,
            probe=probe_boot,
            evaluate=evaluate_boot,
            params={"prefix": "osiris"},
            description="An older version running while a newer one is installed means the newer one failed "
                        "its health gate on every try and systemd-boot fell back (docs/image.md).",
        ),
    ]


@hookimpl
def osiris_rules(ctx):
    return Path(__file__).with_name("rules.yaml")


@hookimpl
def osiris_runbooks(ctx):
    s: Settings = ctx.settings(NAME)
    return RunbookSpec(
        id="appliance.files.make_private",
        title="Remove group/other access from keys and state",
        target_kind="local",
        fixes=("appliance.files.private",),
        risk=Risk.LOW,
        action=lambda params: fix_permissions(
            {**data_params(ctx.paths), "key_paths": [str(p) for p in s.key_paths], **params}
        ),
        timeout=30,
    )
