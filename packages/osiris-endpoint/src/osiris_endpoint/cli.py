"""``osiris-endpoint enrol|run|status``: meant to run as a Windows service
(``run``), after ``enrol`` once with the token an administrator printed with
``osiris endpoints token`` on the appliance."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

import click

from .identity import EnrolError, Identity

DEFAULT_DIR = Path("C:/ProgramData/Osiris/endpoint") if sys.platform == "win32" else Path("/var/lib/osiris-endpoint")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default=True, help="Where the key, certificate and queue live.")
@click.option("-v", "--verbose", count=True)
@click.pass_context
def main(ctx: click.Context, directory: Path, verbose: int) -> None:
    """Osiris endpoint agent."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = directory


@main.command("enrol")
@click.argument("token")
@click.option("--name", default=lambda: socket.gethostname().split(".")[0], help="This endpoint's name.")
@click.option("--role", type=click.Choice(["workstation", "server", "dc"]), default="workstation", show_default=True)
@click.pass_obj
def enrol_cmd(directory: Path, token: str, name: str, role: str) -> None:
    """Enrol with a one-time TOKEN (its key is generated here)."""
    from .agent import enrol

    try:
        identity = asyncio.run(enrol(directory, token, name, role))
    except EnrolError as exc:
        click.echo(f"osiris-endpoint: {exc}", err=True)
        sys.exit(1)
    click.echo(f"enrolled {identity.name} at site {identity.site} ({identity.host}:{identity.stream_port})")


@main.command("run")
@click.option("--check-interval", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Run each check at least this often (s).")
@click.pass_obj
def run_cmd(directory: Path, check_interval: float) -> None:
    """Run the agent until stopped (SIGTERM, Ctrl-C, the service manager)."""
    from .agent import EndpointAgent
    from .host import PowerShellHost

    try:
        agent = EndpointAgent(directory, PowerShellHost(), check_interval=check_interval)
    except EnrolError as exc:
        click.echo(f"osiris-endpoint: {exc}", err=True)
        sys.exit(1)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await agent.run(stop)
        finally:
            agent.close()

    asyncio.run(go())


@main.command("status")
@click.pass_obj
def status_cmd(directory: Path) -> None:
    """This endpoint's identity and queue."""
    from .queue import Queue

    try:
        identity = Identity.load(directory)
    except EnrolError as exc:
        click.echo(f"osiris-endpoint: {exc}", err=True)
        sys.exit(1)
    queue = Queue(directory / "queue.sqlite3")
    click.echo(f"name {identity.name}, site {identity.site}, appliance {identity.host}:{identity.stream_port}")
    click.echo(f"queue {queue.queue_id}: {queue.depth()} waiting, acknowledged through {queue.acked}, "
               f"{queue.dropped} dropped")
