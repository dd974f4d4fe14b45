"""What the local HTTP API accepts before a handler sees a request.

The API changes what runs on the practice's machines (approving a promoted
rule), so a request that changes anything must come from the appliance
itself and from a program, never from a web page a browser on the
appliance happens to show:

* the peer is a loopback address (``::ffff:127.0.0.1``, how a dual-stack
  socket sees an IPv4 client, counts as ``127.0.0.1``);
* ``Host`` names loopback (a page on a DNS name rebound to 127.0.0.1 sends
  its own name);
* ``Content-Type: application/json`` (a cross-site form cannot send it
  without a CORS preflight, which this API never answers);
* ``Origin``, if sent, is a loopback origin, and ``Sec-Fetch-Site``, if
  sent, is ``same-origin`` or ``none`` (what browsers add to cross-site
  requests).

Bodies are JSON of bounded size and nesting: a deeply nested body is a 400
that says so, never a ``RecursionError`` and a 500.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

MAX_BODY = 4096  # bytes; a decision is {"by": "<name>"}
MAX_DEPTH = 8
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The status page's form posts (osiris.web) come from people's browsers,
# possibly off the appliance: they are checked there (login, role, CSRF
# token, same origin), not here.
FORM_PATHS = ("/actions/", "/login", "/logout")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A body the API will not take; ``str()`` is the message to return."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address literal or ``localhost``) is this machine."""
    if not host:
        return False
    host = host.strip("[]").split("%", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _host_of(value: str) -> str | None:
    try:
        return URL(value if "://" in value else f"http://{value}").host
    except ValueError:
        return None


def refusal(request: web.Request) -> str | None:
    """Why a request that changes something is refused, or None."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer or not is_loopback(str(peer[0])):
        return "changes are accepted from the appliance itself only"
    if not is_loopback(_host_of(request.headers.get("Host", ""))):
        return "the Host header must name this machine (127.0.0.1, ::1 or localhost)"
    origin = request.headers.get("Origin")
    if origin is not None and not is_loopback(_host_of(origin)):
        return "cross-origin requests are refused"
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return "cross-site requests are refused"
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests that change something unless they pass :func:`refusal`
    and carry JSON."""
    if request.method not in SAFE_METHODS and not request.path.startswith(FORM_PATHS):
        why = refusal(request)
        if why is not None:
            return web.json_response({"error": why}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "expected Content-Type: application/json"}, status=415)
    return await handler(request)


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (strings
    skipped), found without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


async def read_json(request: web.Request, max_bytes: int = MAX_BODY, max_depth: int = MAX_DEPTH) -> Any:
    """The request's JSON body, or :class:`BadRequest` saying what is wrong."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadRequest(f"body too large: at most {max_bytes} bytes of JSON", 413)
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise BadRequest(f"body too large: at most {max_bytes} bytes of JSON", 413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 JSON") from None
    if _depth(text) > max_depth:
        raise BadRequest(f"JSON nested too deeply: at most {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {getattr(exc, 'msg', exc)}") from None
