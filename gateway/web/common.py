"""What every page handler shares: the web context, rendering with CSRF, forms and sessions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gateway.audit import Actor
from gateway.resets import ResetFlows
from gateway.runtime import Runtime
from gateway.web import security
from gateway.web.flows import load_flows
from gateway.web.sessions import SessionInfo, SessionStore, csrf_key, csrf_ok, csrf_token

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
LOGIN_LIMIT = (20, 300.0)  # attempts per client address per window (seconds)


class CsrfRefused(Exception):
    """A state-changing POST without the right CSRF token (answered with 403)."""


@dataclass
class WebContext:
    """Per-application state of the portals."""

    rt: Runtime
    templates: Jinja2Templates
    sessions: SessionStore
    csrf_key: bytes
    trusted: tuple[security.Network, ...]
    secure: bool
    login_limiter: security.RateLimiter
    _flows: ResetFlows | None = None

    @property
    def flows(self) -> ResetFlows:
        """The core's reset flows (built on first use)."""
        if self._flows is None:
            self._flows = load_flows(self.rt)
        return self._flows

    def cookie(self, name: str) -> str:
        """The cookie name for ``name`` (``__Host-`` prefixed when cookies are Secure)."""
        return f"__Host-gw-{name}" if self.secure else f"gw-{name}"


def make_context(rt: Runtime) -> WebContext:
    """Build the web context for a runtime."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.Undefined
    )
    templates = Jinja2Templates(env=env)
    limit, window = LOGIN_LIMIT
    return WebContext(
        rt=rt,
        templates=templates,
        sessions=SessionStore(rt.store, rt.service.clock),
        csrf_key=csrf_key(Path(rt.settings.secrets.key_file)),
        trusted=security.parse_networks(rt.settings.http.trusted_proxies),
        secure=security.cookie_secure(rt.settings.http.base_url),
        login_limiter=security.RateLimiter(limit, window),
    )


def web(request: Request) -> WebContext:
    """The web context of the application serving ``request``."""
    ctx: WebContext = request.app.state.web
    return ctx


def client(request: Request) -> str:
    """The client address (proxy headers only from trusted proxies)."""
    return security.client_address(request, web(request).trusted)


def actor(request: Request, name: str, via: str) -> Actor:
    """An audit actor for a web request."""
    return Actor(name, via=via, client=client(request))


def set_cookie(response: Response, ctx: WebContext, name: str, value: str) -> None:
    """Set one of our cookies: HttpOnly, SameSite=Strict, Secure unless loopback http, path /."""
    response.set_cookie(
        ctx.cookie(name), value, httponly=True, secure=ctx.secure, samesite="strict", path="/"
    )


def clear_cookie(response: Response, ctx: WebContext, name: str) -> None:
    """Remove one of our cookies."""
    response.delete_cookie(
        ctx.cookie(name), httponly=True, secure=ctx.secure, samesite="strict", path="/"
    )


def render(
    request: Request,
    name: str,
    data: dict[str, Any] | None = None,
    *,
    status: int = 200,
    session: SessionInfo | None = None,
) -> Response:
    """Render a template with a CSRF token bound to the session or the pre-session cookie."""
    ctx = web(request)
    new_pre: str | None = None
    if session is not None:
        bound = session.raw_id
    else:
        bound = request.cookies.get(ctx.cookie("pre")) or ""
        if not bound:
            bound = new_pre = secrets.token_urlsafe(32)
    context = {"csrf": csrf_token(ctx.csrf_key, bound), "org": ctx.rt.org_policy, **(data or {})}
    response = ctx.templates.TemplateResponse(request, name, context, status_code=status)
    if new_pre is not None:
        set_cookie(response, ctx, "pre", new_pre)
    return response


async def form_checked(request: Request, session: SessionInfo | None = None) -> FormData:
    """The posted form, after checking its CSRF token; raises ``CsrfRefused``."""
    ctx = web(request)
    form = await request.form()
    bound = session.raw_id if session else request.cookies.get(ctx.cookie("pre"))
    submitted = form.get("csrf")
    if not csrf_ok(ctx.csrf_key, bound, submitted if isinstance(submitted, str) else None):
        raise CsrfRefused()
    return form


def field(form: FormData, name: str) -> str:
    """A text field of ``form`` ('' when missing or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def current(request: Request, portal: str) -> SessionInfo | None:
    """The session of ``portal`` carried by ``request``, if any."""
    ctx = web(request)
    raw = request.cookies.get(ctx.cookie(portal))
    return await run_in_threadpool(ctx.sessions.get, raw, portal)


def redirect(url: str) -> RedirectResponse:
    """A 303 See Other (POST -> GET)."""
    return RedirectResponse(url, status_code=303)


async def start_session(
    request: Request, response: Response, account_id: int, portal: str, stage: str, must: bool
) -> None:
    """Create a session and put its id in the portal's cookie on ``response``."""
    ctx = web(request)
    raw = await run_in_threadpool(ctx.sessions.create, account_id, portal, stage, must)
    set_cookie(response, ctx, portal, raw)


async def advance_session(
    request: Request, response: Response, info: SessionInfo, stage: str
) -> None:
    """Move a session to ``stage`` under a fresh id and cookie."""
    ctx = web(request)
    raw = await run_in_threadpool(ctx.sessions.advance, info, stage)
    set_cookie(response, ctx, info.portal, raw)


async def end_session(request: Request, response: Response, info: SessionInfo | None) -> None:
    """Delete the session row and clear its cookie."""
    ctx = web(request)
    if info is not None:
        await run_in_threadpool(ctx.sessions.end, info.raw_id)
        clear_cookie(response, ctx, info.portal)
