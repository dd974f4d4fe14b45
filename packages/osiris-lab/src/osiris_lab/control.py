"""The chaos API over HTTP, for a lab served by another process
(``osiris-lab serve --control``). It mirrors :class:`osiris_lab.Lab`'s
methods; every error names the host, setting or field that was wrong.

    GET    /hosts                      practice summary; each host's state and request/command counts
    POST   /hosts/{name}/break         {"setting": "firewall.public.enabled"}
    POST   /hosts/{name}/settings      {"setting": "...", "value": ...}
    POST   /hosts/{name}/restore       {"setting": "..."} or {} for all
    POST   /hosts/{name}/faults        {"kind": "refused", "count": 2, "duration": 5.0}
                                       {"kind": "reset", "count": 1, "action": "Command"}
    DELETE /hosts/{name}/faults
    POST   /latency                    {"host": null, "request": 0.01, "ps_start": 0.3}
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def control_app(lab: Any) -> web.Application:
    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"request body: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="request body: expected a JSON object")
        return data

    def field(data: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
        if key not in data:
            raise web.HTTPBadRequest(text=f"request body: field {key!r} is required")
        if not isinstance(data[key], typ):
            raise web.HTTPBadRequest(text=f"request body: field {key!r} has the wrong type")
        return data[key]

    def guarded(fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                return web.json_response(await fn(request))
            except KeyError as exc:
                return web.json_response({"error": exc.args[0]}, status=404)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return handler

    @guarded
    async def hosts(_request: web.Request) -> Any:
        out = lab.summary()
        out.pop("password", None)
        for h in out["hosts"]:
            host = lab.host(h["name"])
            h.update(state=host.state.snapshot(), requests=host.requests, commands=host.commands_run)
        return out

    @guarded
    async def break_(request: web.Request) -> Any:
        data = await body(request)
        value = lab.break_setting(request.match_info["name"], field(data, "setting", str))
        return {"ok": True, "value": value}

    @guarded
    async def set_(request: web.Request) -> Any:
        data = await body(request)
        field(data, "value", (str, int, float, bool, list, dict, type(None)))
        lab.set_setting(request.match_info["name"], field(data, "setting", str), data["value"])
        return {"ok": True}

    @guarded
    async def restore(request: web.Request) -> Any:
        data = await body(request)
        lab.restore(request.match_info["name"], data.get("setting"))
        return {"ok": True}

    @guarded
    async def fault(request: web.Request) -> Any:
        data = await body(request)
        lab.inject_fault(request.match_info["name"], field(data, "kind", str), count=data.get("count"),
                         duration=data.get("duration"), action=data.get("action"))
        return {"ok": True}

    @guarded
    async def clear(request: web.Request) -> Any:
        lab.clear_faults(request.match_info["name"])
        return {"ok": True}

    @guarded
    async def latency(request: web.Request) -> Any:
        data = await body(request)
        lab.set_latency(data.get("host"), request=data.get("request"), ps_start=data.get("ps_start"))
        return {"ok": True}

    app = web.Application()
    app.router.add_get("/hosts", hosts)
    app.router.add_post("/hosts/{name}/break", break_)
    app.router.add_post("/hosts/{name}/settings", set_)
    app.router.add_post("/hosts/{name}/restore", restore)
    app.router.add_post("/hosts/{name}/faults", fault)
    app.router.add_delete("/hosts/{name}/faults", clear)
    app.router.add_post("/latency", latency)
    return app
