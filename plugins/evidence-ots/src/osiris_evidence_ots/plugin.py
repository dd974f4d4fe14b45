"""The evidence-ots plugin: anchor checkpoints in Bitcoin through
OpenTimestamps calendars, keep pending proofs, upgrade them later.

A sink for checkpoints only. Delivering a checkpoint submits it to the
configured calendars, all at once with one deadline of ``timeout`` seconds
(at least ``min_calendars`` must take it, or the outbox retries later; the
sink declares a ``delivery_timeout`` above that deadline so the outbox does
not cancel it first) and keeps the pending proof as the checkpoint's
``ots`` attestation in the evidence log. Every ``upgrade_interval`` seconds
(the sink's ``maintain``), pending proofs are upgraded; a proof that reaches
a Bitcoin block header attestation is kept as complete. Exports carry the
proofs as ``checkpoints/<size>.note.ots``.

Checkpoints closer together than ``min_interval`` are acknowledged without
being anchored: a later checkpoint covers everything an earlier one does,
and public calendars should not get one submission per five minutes.

``osiris ots verify NOTE PROOF --header HEIGHT=HEX`` checks a proof offline
against a block header (from your own Bitcoin node or a block explorer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, field_validator

from osiris import SettingsSection, hookimpl
from osiris.httpclient import require_https
from osiris.evidence.note import parse_checkpoint

# .proofs (python-opentimestamps, python-bitcoinlib, ~90 ms of imports) is
# imported where it is used: the agent loads every plugin at start-up, and
# this sink is off unless enabled.

NAME = "evidence-ots"
KIND = "ots"
log = logging.getLogger(__name__)

DEFAULT_CALENDARS = [
    "https://a.pool.opentimestamps.org",
    "https://b.pool.opentimestamps.org",
    "https://a.pool.eternitywall.com",
    "https://ots.btc.catallaxy.com",
]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="Anchor checkpoints (needs outbound HTTPS to the calendars)")
    calendars: list[str] = Field(default_factory=lambda: list(DEFAULT_CALENDARS), description="Calendar URLs")
    min_calendars: int = Field(default=2, ge=1, description="Calendars that must take a checkpoint")
    timeout: float = Field(default=15.0, gt=0, le=600,
                           description="Seconds a submission (all calendars, asked at once) or an upgrade request may take")
    min_interval: float = Field(default=3600.0, ge=0, description="Seconds between anchored checkpoints")
    upgrade_interval: float = Field(default=3600.0, gt=0, description="Seconds between upgrade rounds")
    upgrade_whitelist: list[str] = Field(default_factory=list,
                                         description="Extra calendar URLs (or host globs) upgrades may contact")

    @field_validator("calendars")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one calendar URL is needed")
        for url in v:
            try:
                # Plain http is accepted: a calendar's answer is a commitment
                # the proof verifies, not something the channel must protect.
                require_https(url, allow_http=True, flag="allow_http")
            except ValueError as exc:
                raise ValueError(f"calendar {url!r}: expected {exc}") from None
        return v


#: What a delivery needs beyond the calendars' deadline (the attestation write).
DELIVERY_MARGIN = 10.0


class OtsSink:
    name = NAME
    kinds = ("checkpoint",)

    def __init__(self, evidence: Any, settings: Settings, *, run: Callable[..., Awaitable[Any]] | None = None):
        self.evidence = evidence
        self.settings = settings
        self.maintain_interval = settings.upgrade_interval
        # The outbox gives a delivery max(evidence.delivery_timeout, this):
        # the calendars are asked at once with one deadline of ``timeout``,
        # so a delivery is never cancelled while they are still answering.
        self.delivery_timeout = settings.timeout + DELIVERY_MARGIN
        from . import proofs

        self.proofs = proofs
        self.allowed = proofs.whitelist(settings.calendars, settings.upgrade_whitelist)
        self._run = run or asyncio.to_thread
        self._last_anchored: datetime | None = None

    async def _latest_anchor_time(self) -> datetime | None:
        if self._last_anchored is None:
            done = await self.evidence.attestations(KIND)
            if done:
                cp = await self.evidence.checkpoint_at(max(a["size"] for a in done))
                self._last_anchored = cp.datetime if cp is not None and cp.time else None
        return self._last_anchored

    async def deliver(self, item_id: str, payload: bytes) -> None:
        cp = parse_checkpoint(payload)
        last = await self._latest_anchor_time()
        if last is not None and cp.time and (cp.datetime - last).total_seconds() < self.settings.min_interval:
            return  # a later checkpoint will cover these entries
        s = self.settings
        data, ok, errors = await self._run(self.proofs.stamp, payload, s.calendars, min_calendars=s.min_calendars,
                                           timeout=s.timeout, deadline=s.timeout)
        await self.evidence.attest(cp.size, KIND, data, complete=False,
                                   detail=f"pending at {len(ok)} calendar(s)" + (f"; {len(errors)} failed" if errors else ""))
        if cp.time:
            self._last_anchored = cp.datetime

    async def maintain(self) -> int:
        """Upgrade pending proofs; returns how many became complete."""
        completed = 0
        for a in await self.evidence.attestations(KIND, complete=False):
            data, complete, changed = await self._run(self.proofs.upgrade, a["data"], self.allowed,
                                                      timeout=self.settings.timeout)
            if changed:
                await self.evidence.attest(a["size"], KIND, data, complete=complete,
                                           detail="anchored in Bitcoin" if complete else "partly upgraded")
                completed += complete
        return completed


@hookimpl
def osiris_settings():
    return SettingsSection(NAME, Settings, "OpenTimestamps anchoring of evidence checkpoints")


@hookimpl
def osiris_evidence_sinks(ctx):
    s: Settings = ctx.settings(NAME)
    if not s.enabled or ctx.evidence is None:
        return None
    return OtsSink(ctx.evidence, s, run=ctx.run_blocking)


def _headers(values: tuple[str, ...]) -> dict[int, bytes]:
    out = {}
    for v in values:
        height, sep, hexdata = v.partition("=")
        if not sep or not height.isdigit():
            raise click.BadParameter(f"{v[:30]!r}: expected HEIGHT=HEX or HEIGHT=@FILE", param_hint="--header")
        try:
            raw = Path(hexdata[1:]).read_text().strip() if hexdata.startswith("@") else hexdata
            out[int(height)] = bytes.fromhex(raw)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"block {height}: {exc}", param_hint="--header") from None
    return out


@click.group(name="ots")
def ots_group() -> None:
    """OpenTimestamps proofs of evidence checkpoints."""


@ots_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("proof", type=click.Path(exists=True, dir_okay=False))
@click.option("--header", "headers", multiple=True,
              help="A Bitcoin block header: HEIGHT=HEX (80 bytes) or HEIGHT=@FILE; repeatable.")
@click.option("--no-pow", is_flag=True, help="Do not require mainnet proof of work (test headers).")
def ots_verify(file: str, proof: str, headers: tuple[str, ...], no_pow: bool) -> None:
    """Verify PROOF (an .ots file) of FILE offline against block headers."""
    from . import proofs

    try:
        anchors = proofs.verify(Path(file).read_bytes(), Path(proof).read_bytes(), _headers(headers),
                                require_pow=not no_pow)
    except proofs.ProofError as exc:
        click.echo(f"osiris: {proof}: {exc}", err=True)
        raise SystemExit(1) from None
    for a in anchors:
        click.echo(f"ok: Bitcoin block {a.height} ({a.block_hash}) attests {file} existed by {a.when}")


@ots_group.command("info")
@click.argument("proof", type=click.Path(exists=True, dir_okay=False))
def ots_info(proof: str) -> None:
    """Print a proof's operations and attestations."""
    from . import proofs

    try:
        click.echo(proofs.describe(Path(proof).read_bytes()))
    except proofs.ProofError as exc:
        click.echo(f"osiris: {proof}: {exc}", err=True)
        raise SystemExit(1) from None


@hookimpl
def osiris_commands(cli):
    cli.add_command(ots_group)
