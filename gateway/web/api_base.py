"""Admin API plumbing: the route class that authenticates first, maps core errors, audits refusals.

Every route of the admin API uses ``ApiRoute``. Before the endpoint (and before its body is even
parsed) the bearer credential is checked; without a valid one the answer is always the same
401. Core errors become HTTP answers here and nowhere else:

    PolicyViolation -> 422 (its safe message)   NotFound -> 404   Conflict -> 409
    RateLimited (a PolicyViolation) -> 429
    AuthenticationFailed -> 401 (uniform)        Overloaded -> 503 (Retry-After)
    Forbidden (API keys managing API keys) -> 403

Validation errors are answered without echoing the input (it may hold a password). A refused
state-changing call is audited with the caller, the client address and the safe reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from gateway import audit
from gateway.apikeys import ApiCredentials, Principal
from gateway.audit import Actor
from gateway.errors import (
    AuthenticationFailed,
    Conflict,
    GatewayError,
    NotFound,
    Overloaded,
    PolicyViolation,
)
from gateway.ratelimit import RateLimited
from gateway.runtime import Runtime
from gateway.views import AccountView
from gateway.web import security

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_CREDENTIAL = 256
LOGIN_LIMIT = (20, 300.0)  # login attempts per client address per window (seconds)
UNAUTHORIZED = {"detail": "authentication required"}
_ctx_lock = threading.Lock()


class Forbidden(Exception):
    """The caller is authenticated but this credential may not do that (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class ApiContext:
    """Per-application state of the admin API."""

    rt: Runtime
    creds: ApiCredentials
    trusted: tuple[security.Network, ...]
    login_limiter: security.RateLimiter


def context(request: Request) -> ApiContext:
    """The admin API state of this application (made on first use)."""
    state = request.app.state
    ctx: ApiContext | None = getattr(state, "gateway_api", None)
    if ctx is None:
        with _ctx_lock:
            ctx = getattr(state, "gateway_api", None)
            if ctx is None:
                rt: Runtime = state.rt
                ctx = ApiContext(
                    rt=rt,
                    creds=ApiCredentials(rt.store, rt.service.clock),
                    trusted=security.parse_networks(rt.settings.http.trusted_proxies),
                    login_limiter=security.RateLimiter(*LOGIN_LIMIT),
                )
                state.gateway_api = ctx
    return ctx


def unauthorized() -> JSONResponse:
    """The one answer to every request without valid credentials."""
    return JSONResponse(
        UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="gateway"'}
    )


def _bearer(request: Request) -> str | None:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, credential = values[0].partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL:
        return None
    return credential


def error_response(exc: GatewayError) -> JSONResponse:
    """The HTTP answer for a core error (never a secret: core messages are safe to show)."""
    if isinstance(exc, RateLimited):
        return JSONResponse({"detail": exc.message}, status_code=429, headers={"Retry-After": "60"})
    if isinstance(exc, PolicyViolation):
        return JSONResponse({"detail": exc.message, "rule": exc.rule}, status_code=422)
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": "not found"}, status_code=404)
    if isinstance(exc, Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)
    if isinstance(exc, AuthenticationFailed):
        return unauthorized()
    if isinstance(exc, Overloaded):
        return JSONResponse(
            {"detail": "busy, retry later"}, status_code=503, headers={"Retry-After": "1"}
        )
    log.error("admin API: unexpected %s", type(exc).__name__)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 listing where and what, never the rejected input."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def _reason(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, PolicyViolation):
        return "refused", exc.message
    if isinstance(exc, Conflict):
        return "refused", str(exc)
    if isinstance(exc, Forbidden):
        return "refused", exc.message
    if isinstance(exc, NotFound):
        return "failed", "not found"
    return "failed", type(exc).__name__


def _audit_refusal(
    rt: Runtime, actor: Actor, action: str, subject: str, exc: Exception, path: str
) -> None:
    outcome, reason = _reason(exc)
    with rt.store.write() as s:
        audit.record(
            s,
            rt.service.clock.now(),
            actor,
            action,
            subject=subject[:320],
            outcome=outcome,
            reason=reason,
            details={"path": path},
        )


def is_public(route: APIRoute) -> bool:
    """Routes that declare ``security: []`` in their OpenAPI extra need no credential."""
    return bool(route.openapi_extra is not None and route.openapi_extra.get("security") == [])


class ApiRoute(APIRoute):
    """An admin API route: authentication first, then the endpoint, then error mapping."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the credential check and the error mapping."""
        original = super().get_route_handler()
        public = is_public(self)
        action = f"api_{self.name}"[:64]

        async def handler(request: Request) -> Response:
            ctx = context(request)
            client = security.client_address(request, ctx.trusted)
            request.state.api_client = client
            who: Principal | None = None
            if not public:
                credential = _bearer(request)
                if credential is not None:
                    who = await run_in_threadpool(ctx.creds.verify_bearer, credential, client)
                if who is None:
                    return unauthorized()
                request.state.api_principal = who
            try:
                return await original(request)
            except RequestValidationError as exc:
                return validation_response(exc)
            except (GatewayError, Forbidden) as exc:
                if who is not None and request.method != "GET":
                    subject = str(request.path_params.get("ref", ""))
                    await run_in_threadpool(
                        _audit_refusal,
                        ctx.rt,
                        who.actor(client),
                        action,
                        subject,
                        exc,
                        request.url.path,
                    )
                if isinstance(exc, Forbidden):
                    return JSONResponse({"detail": exc.message}, status_code=403)
                return error_response(exc)

        return handler


def principal(request: Request) -> Principal:
    """The authenticated caller (set by ``ApiRoute`` before the endpoint runs)."""
    who: Principal = request.state.api_principal
    return who


def caller_actor(request: Request) -> Actor:
    """The audit actor of this request: who, via the API, from which client address."""
    return principal(request).actor(request.state.api_client)


def client_of(request: Request) -> str:
    """The client address of this request (trusted proxies honoured)."""
    client: str = request.state.api_client
    return client


Ctx = Annotated[ApiContext, Depends(context)]
Caller = Annotated[Principal, Depends(principal)]
CallerActor = Annotated[Actor, Depends(caller_actor)]
Client = Annotated[str, Depends(client_of)]


def account_ref(ref: str) -> int | str:
    """A path reference: a numeric id, else a username or e-mail address."""
    return int(ref) if ref.isdigit() and len(ref) < 12 else ref


async def account_of_kind(rt: Runtime, ref: str, kind: str) -> AccountView:
    """The account ``ref`` if it is of ``kind``; NotFound otherwise (users and admins apart)."""
    view = await rt.service.get_account(account_ref(ref))
    if view.kind != kind:
        raise NotFound(f"no {kind} {ref!r}")
    return view
