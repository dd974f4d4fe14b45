"""The plugin's settings (``plugins.update-ab`` in the agent's config; the
root-side runner reads the same section from its settings file)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME = "update-ab"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str | None = Field(default=None, description="Release repository base URL (https://...); unset: updates not configured")
    trusted_root: Path | None = Field(default=None, description="TUF root.json pinned in the image (the trust anchor)")
    cafile: Path | None = Field(default=None, description="CA bundle for the repository's HTTPS; unset: the system's")
    hardware: str | None = Field(default=None, description="Hardware model the releases must be for, e.g. t640")
    disk: Path | None = Field(default=None, description="Disk (block device or image file) holding the slots; unset: the disk of the booted slot")
    esp: str = Field(default="/boot", description="Mounted ESP directory, or \"image\": the ESP partition of `disk` through mtools")
    booted_version: str | None = Field(default=None, description="The running version; unset: IMAGE_VERSION in /etc/os-release, else the kernel command line")
    state_dir: Path = Field(default=Path("/var/lib/osiris-update"), description="status.json, journal.jsonl, TUF metadata, requests")
    tries: int = Field(default=3, ge=1, le=9, description="Boots a new version gets before systemd-boot falls back")
    check_interval: int = Field(default=21600, ge=60, description="Seconds between the agent's checks for a newer release")
    reboot_window: str | None = Field(default=None, description="Local time HH:MM-HH:MM a scheduled reboot falls in; unset: reboot at once")
    reboot_command: list[str] = Field(
        default=["systemd-run", "--unit=osiris-update-reboot", "--on-calendar={at}", "systemctl", "reboot"],
        description="What schedules the reboot; {at} is replaced by the time ('YYYY-MM-DD HH:MM:SS')")
    runner: Literal["systemd", "inline"] = Field(
        default="systemd", description="systemd: the agent asks osiris-update.service (root) through a request file; inline: the agent runs the installer itself (tests, labs)")

    @field_validator("reboot_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and not _WINDOW.match(v):
            raise ValueError(f"{v!r}: expected HH:MM-HH:MM (24-hour local time), e.g. 02:00-04:00")
        return v

    @field_validator("repository")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError(f"{v!r}: expected an https:// URL")
        return v

    def missing(self) -> list[str]:
        """What an update needs and is not set (empty: configured)."""
        return [k for k in ("repository", "trusted_root", "hardware") if getattr(self, k) is None]


class SettingsError(Exception):
    pass


def load(path: Path) -> Settings:
    """The section from a settings file: the agent's config (JSON, its
    ``plugins.update-ab``) or the section alone."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    if isinstance(data, dict) and "plugins" in data:
        data = (data.get("plugins") or {}).get(NAME, {})
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a JSON object (the plugins.{NAME} section)")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"plugins.{NAME}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{path}: {errs}") from None
