"""The status page: server-rendered HTML on the agent's aiohttp app.

Pages (``GET``, refreshing themselves): ``/`` overview (hosts, HIPAA
specifications, drift still present), ``/hosts/{name}``, ``/incidents``,
``/exceptions``, ``/rules``, ``/evidence``. Actions (form ``POST`` under
``/actions/``) accept and remove risks, approve and reject rule
candidates, resolve incidents; each is signed evidence with who and why
(:mod:`osiris.actions`). Who may see and act: :mod:`osiris.web.auth`.

Everything a template gets has passed the evidence scrubber
(``ctx.scrub``), as ``/status`` has.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from .. import __version__, actions, risk
from ..api_guard import is_loopback
from ..store import StoreError
from . import auth
from .views import Views

PAGES_REFRESH = 30  # seconds
FORM_MAX = 8192  # bytes of a form post
OK_MESSAGES = {
    "exception-added": "Risk accepted and recorded as signed evidence.",
    "exception-removed": "Exception removed and recorded as signed evidence; the drift it covered is drift again.",
    "approved": "Candidate approved: the rule is written and in force; the decision is signed evidence.",
    "rejected": "Candidate rejected; the decision is signed evidence.",
    "resolved": "Incident resolved; who and why are signed evidence.",
}
# Where the access middleware leaves the request's user (aiohttp >= 3.12 types its request keys).
USER: Any = web.RequestKey("osiris_user", object) if hasattr(web, "RequestKey") else "osiris_user"
_env = jinja2.Environment(loader=jinja2.PackageLoader("osiris.web", "templates"),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                          undefined=jinja2.StrictUndefined)

def _headers(secure: bool) -> dict[str, str]:
    h = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                   "frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        # same-origin, not no-referrer: with no-referrer a browser posts forms with
        # "Origin: null", which the same-origin check must refuse.
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }
    if secure:
        h["Strict-Transport-Security"] = "max-age=31536000"
    return h


class StatusPage:
    def __init__(self, agent: Any):
        self.agent = agent
        self.views = Views(agent)
        http = agent.loaded.config.agent.http
        self.login_required = auth.login_required(http)
        self.secure = http.tls is not None
        self.session_hours = http.session_hours
        self.csrf_cookie = auth.CSRF_COOKIE_TLS if self.secure else auth.CSRF_COOKIE_PLAIN

    # -- plumbing ----------------------------------------------------------------------------

    def user(self, request: web.Request) -> auth.User | None:
        if not self.login_required:
            return auth.User("", "operator")  # on the appliance: no login; actions ask for a name
        return auth.session_user(self.agent.store, request.cookies.get(auth.SESSION_COOKIE))

    def _cookie(self, resp: web.StreamResponse, name: str, value: str, max_age: int | None = None) -> None:
        resp.set_cookie(name, value, path="/", secure=self.secure, httponly=True, samesite="Strict", max_age=max_age)

    def render(self, request: web.Request, template: str, data: dict[str, Any], *, status: int = 200,
               refresh: bool = False) -> web.Response:
        csrf = request.cookies.get(self.csrf_cookie) or auth.new_csrf()
        user = request.get(USER)
        context = {
            **self.agent.ctx.scrub(data),  # nothing reaches a person that the evidence would not keep
            "site": self.agent.ctx.site, "user": user, "csrf": csrf, "version": __version__,
            "now": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "refresh": PAGES_REFRESH if refresh else None,
            "message": OK_MESSAGES.get(request.query.get("ok", "")),
        }
        context.setdefault("error", None)
        body = _env.get_template(template).render(**context)
        resp = web.Response(text=body, content_type="text/html", status=status, headers=_headers(self.secure))
        if request.cookies.get(self.csrf_cookie) != csrf:
            self._cookie(resp, self.csrf_cookie, csrf)
        return resp

    def refuse(self, request: web.Request, error: str, status: int = 400, back: str = "/") -> web.Response:
        return self.render(request, "error.html", {"heading": "Not done", "error": error, "back": back}, status=status)

    async def form(self, request: web.Request) -> dict[str, str]:
        """The posted form, after the CSRF and same-origin checks; raises
        :class:`Refused` with what is wrong."""
        if request.content_length is not None and request.content_length > FORM_MAX:
            raise Refused("form too large", 413)
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise Refused("expected a form post", 415)
        why = auth.cross_site(request.headers, "https" if self.secure else "http", request.host)
        if why:
            raise Refused(why, 403)
        if not self.login_required and not is_loopback(request.url.host):
            raise Refused("the Host header must name this machine (127.0.0.1, ::1 or localhost)", 403)
        data = await request.post()
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        if not auth.same_token(form.get("csrf"), request.cookies.get(self.csrf_cookie)):
            raise Refused("the form's security token did not match: reload the page and try again", 403)
        return form

    def actor(self, request: web.Request, form: dict[str, str]) -> str:
        user: auth.User = request[USER]
        if not user.operator:
            raise Refused("viewers may look, not act: an operator account is needed", 403)
        return user.name or form.get("by", "")

    # -- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def access(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path == "/health":
            return await handler(request)
        user = self.user(request)
        request[USER] = user
        if user is not None or path == "/login":
            return await handler(request)
        # Off loopback, without a login: programs on the appliance itself
        # keep the JSON API (the CLI, a local Prometheus); people log in.
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if path in API_PATHS or path.startswith("/rules/candidates/"):
            if peer and is_loopback(str(peer[0])):
                return await handler(request)
            return web.json_response({"error": "log in first"}, status=401)
        if request.method == "GET":
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        return web.json_response({"error": "log in first"}, status=401)

    # -- pages ----------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        return self.render(request, "overview.html", {**self.views.overview(), "update": await self.views.update()},
                           refresh=True)

    async def host(self, request: web.Request) -> web.Response:
        data = self.views.host(request.match_info["name"])
        if data is None:
            return self.refuse(request, "no such host", 404)
        return self.render(request, "host.html", data, refresh=True)

    async def incidents(self, request: web.Request) -> web.Response:
        return self.render(request, "incidents.html", self.views.incidents(), refresh=True)

    async def exceptions(self, request: web.Request) -> web.Response:
        data = self.views.exceptions()
        data["preset_check"] = request.query.get("check", "")
        data["preset_host"] = request.query.get("host", "")
        return self.render(request, "exceptions.html", data)

    async def rules(self, request: web.Request) -> web.Response:
        return self.render(request, "rules.html", self.views.rules())

    async def evidence(self, request: web.Request) -> web.Response:
        return self.render(request, "evidence.html", self.views.evidence(), refresh=True)

    # -- logging in and out -----------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        if not self.login_required:
            raise web.HTTPSeeOther("/")
        return self.render(request, "login.html", {"next": _local(request.query.get("next", "/"))})

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.login_required:
            raise web.HTTPSeeOther("/")
        try:
            form = await self.form(request)
        except Refused as exc:
            return self.render(request, "login.html", {"next": "/", "error": str(exc)}, status=exc.status)
        name, password = form.get("name", ""), form.get("password", "")
        try:
            user = await self.agent.ctx.run_blocking(auth.authenticate, self.agent.store, name, password)
        except auth.AuthError as exc:
            return self.render(request, "login.html", {"next": _local(form.get("next", "/")), "error": str(exc)},
                               status=401)
        token = auth.start_session(self.agent.store, user, self.session_hours)
        resp = web.HTTPSeeOther(_local(form.get("next", "/")))
        self._cookie(resp, auth.SESSION_COOKIE, token, int(self.session_hours * 3600))
        self._cookie(resp, self.csrf_cookie, auth.new_csrf())  # a new token for the new session
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.form(request)
        except Refused as exc:
            return self.refuse(request, str(exc), exc.status)
        auth.end_session(self.agent.store, request.cookies.get(auth.SESSION_COOKIE))
        resp = web.HTTPSeeOther("/login" if self.login_required else "/")
        resp.del_cookie(auth.SESSION_COOKIE, path="/")
        raise resp

    # -- actions --------------------------------------------------------------------------------

    async def _act(self, request: web.Request, back: str, do: Any) -> web.StreamResponse:
        try:
            form = await self.form(request)
            by = self.actor(request, form)
            done = await do(form, by)
        except Refused as exc:
            return self.refuse(request, str(exc), exc.status, back)
        except actions.ActionError as exc:
            return self.refuse(request, str(exc), 400, back)
        raise web.HTTPSeeOther(f"{back}?ok={done}")

    async def accept_risk(self, request: web.Request) -> web.StreamResponse:
        loaded = self.agent.loaded

        async def do(form: dict[str, str], by: str) -> str:
            await actions.accept_risk(
                self.agent.store, self.agent.evidence, check=form.get("check", ""), host=form.get("host") or None,
                reason=form.get("reason", ""), approved_by=form.get("approved_by", ""),
                expires=form.get("expires", ""), by=by, via="status page", checks=loaded.registry.checks,
                targets=[t.name for t in loaded.targets], now=datetime.now(timezone.utc))
            return "exception-added"

        return await self._act(request, "/exceptions", do)

    async def remove_exception(self, request: web.Request) -> web.StreamResponse:
        async def do(form: dict[str, str], by: str) -> str:
            await actions.remove_exception(self.agent.store, self.agent.evidence, _id(request), by=by,
                                           reason=form.get("reason", ""), via="status page")
            return "exception-removed"

        return await self._act(request, "/exceptions", do)

    async def decide(self, request: web.Request) -> web.StreamResponse:
        decision = request.match_info["decision"]

        async def do(form: dict[str, str], by: str) -> str:
            await actions.decide_candidate(self.agent.ladder.learning, self.agent.evidence, _id(request), decision,
                                           by=by, reason=form.get("reason", ""), via="status page")
            self.agent.ladder.reload()
            return "approved" if decision == "approve" else "rejected"

        return await self._act(request, "/rules", do)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        async def do(form: dict[str, str], by: str) -> str:
            outcome = form.get("outcome", "")
            if outcome not in ("dismissed", "healed", "suppressed"):
                raise actions.ActionError(f"outcome {outcome!r}: expected dismissed, healed or suppressed")
            try:
                by = actions.who(by, "resolving an incident")
                reason = risk.text_field("reason", form.get("reason", ""))
                await self.agent.ladder.resolve(_id(request), outcome, "L3" if outcome == "healed" else "none",
                                                f"resolved by {by}: {reason}", by=by,
                                                extra={"reason": reason, "via": "status page"})
            except (risk.ExceptionError, StoreError) as exc:
                raise actions.ActionError(str(exc)) from None
            return "resolved"

        return await self._act(request, "/incidents", do)


class Refused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


API_PATHS = frozenset({"/status", "/metrics", "/rules/candidates", "/sweep"})


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except (KeyError, ValueError):
        raise actions.ActionError("expected a number in the address") from None


def _local(path: str) -> str:
    """A redirect target on this site only (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def install(app: web.Application, agent: Any) -> StatusPage:
    """Add the status page's routes to the agent's app; returns the page
    (its ``access`` middleware must run first: :func:`osiris.api.make_app`)."""
    page = StatusPage(agent)
    r = app.router
    r.add_get("/", page.overview)
    r.add_get("/hosts/{name}", page.host)
    r.add_get("/incidents", page.incidents)
    r.add_get("/exceptions", page.exceptions)
    r.add_get("/rules", page.rules)
    r.add_get("/evidence", page.evidence)
    r.add_get("/login", page.login_form)
    r.add_post("/login", page.login)
    r.add_post("/logout", page.logout)
    r.add_post("/actions/exceptions", page.accept_risk)
    r.add_post("/actions/exceptions/{id}/remove", page.remove_exception)
    r.add_post("/actions/candidates/{id}/{decision:approve|reject}", page.decide)
    r.add_post("/actions/incidents/{id}/resolve", page.resolve)
    return page
