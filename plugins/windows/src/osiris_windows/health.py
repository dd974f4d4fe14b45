"""The windows plugin's health check for the post-boot gate: at least one
Windows target answers on its WinRM port.

A new image that cannot reach any of the practice's machines (a broken
network stack, a missing driver, a firewall rule gone wrong) watches
nothing, so it must not be blessed. One unreachable host is the estate's
business (its checks say so), not the image's: the gate asks for one.
Only a TCP connection is made, no credentials are sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from osiris.records import HealthCheck, HealthResult, Target

from .settings import Settings, parse_options

NAME = "windows.reachable"


async def _connect(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return os.strerror(exc.errno).lower() if exc.errno else str(exc) or type(exc).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


def reachable(targets: Sequence[Target], settings: Settings) -> HealthCheck | None:
    """The check, or None when the config has no windows target."""
    if not targets:
        return None

    async def run() -> HealthResult:
        endpoints = []
        for t in targets:
            parts = urlsplit(parse_options(t.name, t.options).endpoint(t.address))
            endpoints.append((t.name, parts.hostname or t.address, parts.port or 0))
        pending = {asyncio.ensure_future(_connect(h, p, settings.connect_timeout)): (n, h, p)
                   for n, h, p in endpoints}
        problems: list[str] = []
        try:
            # The first host that answers settles it.
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    name, host, port = pending.pop(fut)
                    why = fut.result()
                    if why is None:
                        return HealthResult(True, f"{name} answers on {host}:{port} "
                                                  f"({len(problems)} of {len(endpoints)} tried did not)")
                    problems.append(f"{name} ({host}:{port}): {why}")
        finally:
            for fut in pending:
                fut.cancel()
        return HealthResult(False, f"none of the {len(endpoints)} windows targets answers: " + "; ".join(problems))

    return HealthCheck(NAME, run)


def health_checks(ctx: Any, settings: Settings, kind: str) -> HealthCheck | None:
    return reachable([t for t in ctx.targets if t.kind == kind], settings)
