"""``osiris endpoints token|list|revoke``: run on the appliance, against
the same state database and key directory as the agent."""

from __future__ import annotations

import datetime as dt
import sys
import time

import click
from osiris.commands import agent_context

from . import tokens
from .pki import Authority, PKIError
from .registry import Endpoints


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"osiris: {message}", err=True)
    sys.exit(code)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def issue_token(ctx, ttl: float | None = None, uses: int = 1, address: str | None = None) -> tuple[str, float]:
    """A new enrolment token (text, expiry): the API behind ``osiris
    endpoints token``, also for tests and the lab."""
    settings = ctx.settings("endpoints")
    authority = Authority.load_or_create(ctx.paths.key_dir, ctx.site.id)
    if address is None:
        from .server import server_names
        address = f"{server_names(settings)[0]}:{settings.enrol_port}"
    token, expires = tokens.issue(ctx.state("endpoints"), ctx.site.id, address, authority.pin,
                                  ttl if ttl is not None else settings.token_ttl, uses)
    return token.encode(), expires


@click.group("endpoints")
def endpoints_group() -> None:
    """Endpoint agents: enrolment tokens, the enrolled endpoints, revocation (docs/endpoints.md)."""


@endpoints_group.command("token")
@click.option("--ttl", type=click.FloatRange(60, 30 * 86400), default=None,
              help="Seconds the token stays valid (default: plugins.endpoints.token_ttl, 3600).")
@click.option("--uses", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Endpoints the token may enrol.")
@click.option("--address", default=None, help="HOST:PORT endpoints enrol at (default: advertise and enrol_port).")
def token_cmd(ttl: float | None, uses: int, address: str | None) -> None:
    """Print a one-time enrolment token (it carries the CA's SHA-256 pin)."""
    ctx = agent_context()
    try:
        text, expires = issue_token(ctx, ttl, uses, address)
    except PKIError as exc:
        _fail(str(exc))
    click.echo(text)
    click.echo(f"valid until {_when(expires)} for {uses} enrolment{'s' if uses > 1 else ''}", err=True)


@endpoints_group.command("list")
def list_cmd() -> None:
    """Enrolled endpoints: name, version, last seen, queue depth, certificate expiry."""
    ctx = agent_context()
    rows = []
    now = time.time()
    for rec in Endpoints(ctx.state("endpoints")).all():
        state = "revoked" if rec.get("revoked_at") else ("silent" if rec.get("silent") else "enrolled")
        if not rec.get("revoked_at") and rec.get("not_after", 0) < now:
            state = "expired"
        rows.append((rec["name"], rec.get("role", ""), rec.get("version") or "-", _when(rec.get("last_seen")),
                     rec.get("queue_depth", 0), _when(rec.get("not_after")), state))
    headers = ("NAME", "ROLE", "VERSION", "LAST SEEN", "QUEUE", "CERT EXPIRES", "STATE")
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


@endpoints_group.command("revoke")
@click.argument("name")
def revoke_cmd(name: str) -> None:
    """Revoke an endpoint: its certificate stops working, its open stream is
    closed within plugins.endpoints.revocation_poll seconds (15)."""
    ctx = agent_context()
    rec = Endpoints(ctx.state("endpoints")).revoke(name)
    if rec is None:
        _fail(f"no endpoint named {name!r} (see `osiris endpoints list`)")
    click.echo(f"revoked {name} at {_when(rec['revoked_at'])}")
