"""Did this boot fall back? The boot loader's view, from the EFI variables
systemd-boot sets (Boot Loader Interface): every entry it found
(``LoaderEntries``) and the one it booted (``LoaderEntrySelected``).

systemd-boot boots the newest entry that has tries left; an older version
running while a newer one is installed means the newer one ran out of
tries: its health gate failed on every try and the appliance fell back
(docs/image.md, "Boot counting"). That is an incident for a human.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from osiris import Status, Verdict

EFIVARS = "/sys/firmware/efi/efivars"
VENDOR = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd-boot's
# osiris_<version>[+LEFT[-DONE]].efi|.conf
_ENTRY = re.compile(r"^(?P<prefix>[A-Za-z0-9]+)_(?P<version>.+?)(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.(?:efi|conf)$")


def _read(efivars: Path, name: str) -> str | None:
    try:
        raw = (efivars / f"{name}-{VENDOR}").read_bytes()[4:]  # 4 bytes of attributes, then UTF-16LE
    except OSError:
        return None
    return raw.decode("utf-16-le", errors="replace")


def probe_boot(params: Mapping[str, Any]) -> dict[str, Any]:
    efivars = Path(params.get("efivars", EFIVARS))
    entries = _read(efivars, "LoaderEntries")
    selected = _read(efivars, "LoaderEntrySelected")
    return {
        "entries": [e for e in (entries or "").split("\x00") if e],
        "selected": (selected or "").rstrip("\x00") or None,
        "boot_loader_info": entries is not None,
    }


def parse(entry: str, prefix: str) -> dict[str, Any] | None:
    m = _ENTRY.match(entry)
    if not m or m.group("prefix") != prefix:
        return None
    left = m.group("left")
    return {"entry": entry, "version": m.group("version"), "tries_left": int(left) if left is not None else None}


def _tokens(v: str) -> list[tuple[int, Any]]:
    # As systemd compares versions (strverscmp_improved), roughly: numbers
    # by value, letters by text, '~' before anything (a pre-release).
    out: list[tuple[int, Any]] = []
    for t in re.findall(r"\d+|[A-Za-z]+|~", v):
        out.append((0, 0) if t == "~" else (2, int(t)) if t.isdigit() else (1, t))
    return out


def newer(a: str, b: str) -> bool:
    """Is version ``a`` newer than ``b``?"""
    ta, tb = _tokens(a), _tokens(b)
    for x, y in zip(ta, tb):
        if x != y:
            return x > y
    if len(ta) == len(tb):
        return False
    rest = (ta if len(ta) > len(tb) else tb)[min(len(ta), len(tb))]
    longer_is_newer = rest != (0, 0)
    return longer_is_newer if len(ta) > len(tb) else not longer_is_newer


def evaluate_boot(facts: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
    prefix = params["prefix"]
    if not facts["boot_loader_info"]:
        return Verdict(Status.PASS, "not booted by systemd-boot (no LoaderEntries): no boot counting to assess")
    ours = [p for p in (parse(e, prefix) for e in facts["entries"]) if p]
    booted = parse(facts["selected"] or "", prefix)
    if booted is None:
        return Verdict(Status.PASS, f"booted entry {facts['selected']!r} is not an {prefix} version")
    newest = max(ours, key=lambda p: _tokens(p["version"]), default=booted)
    if newer(newest["version"], booted["version"]):
        bad = " (it ran out of tries)" if newest["tries_left"] == 0 else ""
        return Verdict(Status.FAIL, f"fell back: booted version {booted['version']}, but version {newest['version']} "
                                    f"is installed as {newest['entry']}{bad}; its health gate failed on every try")
    return Verdict(Status.PASS, f"booted the newest installed version, {booted['version']} ({booted['entry']})")
