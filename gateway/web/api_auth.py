"""Admin API authentication: login (password + TOTP) for a short-lived token, logout, API keys.

A login failure of any kind (unknown, wrong password, locked, disabled, expired, not an
administrator, TOTP missing or wrong) is the same 401; wrong passwords and wrong codes count
through the core's lockout. API keys are managed only with an administrator login, so a key
can never mint or revoke keys.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway import audit
from gateway.audit import Actor
from gateway.errors import AuthenticationFailed
from gateway.runtime import Runtime
from gateway.web.api_base import (
    UNAUTHORIZED,
    ApiRoute,
    Caller,
    CallerActor,
    Client,
    Ctx,
    Forbidden,
)
from gateway.web.api_models import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    LoginOut,
    WhoAmI,
)

router = APIRouter(route_class=ApiRoute, tags=["auth"])
PUBLIC: dict[str, object] = {"security": []}
LOGIN_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {
        "description": "Login failed (always the same answer).",
        "content": {"application/json": {"example": UNAUTHORIZED}},
    },
    403: {"description": "Correct credentials, but the password must be changed first."},
    429: {"description": "Too many attempts from this client address."},
}


def _refuse(rt: Runtime, actor: Actor, account_id: int, username: str, reason: str) -> None:
    with rt.store.write() as s:
        audit.record(
            s,
            rt.service.clock.now(),
            actor,
            "api_login",
            account_id=account_id,
            subject=username,
            outcome="failed",
            reason=reason,
        )


@router.post(
    "/auth/login",
    response_model=LoginOut,
    openapi_extra=PUBLIC,
    responses=LOGIN_RESPONSES,
    summary="Log in as an administrator",
)
async def login(body: LoginIn, ctx: Ctx, client: Client) -> LoginOut | JSONResponse:
    """Password, then the TOTP code when enrolled; returns a bearer token valid 15 minutes."""
    if not ctx.login_limiter.allow(client):
        return JSONResponse(
            {"detail": "too many attempts, retry later"},
            status_code=429,
            headers={"Retry-After": str(int(ctx.login_limiter.window))},
        )
    svc = ctx.rt.service
    result = await svc.authenticate(
        body.username, body.password.get_secret_value(), via="api", client=client
    )
    actor = Actor(f"admin:{result.username}", via="api", client=client)
    if result.kind != "admin":
        await run_in_threadpool(
            _refuse, ctx.rt, actor, result.account_id, result.username, "not an administrator"
        )
        raise AuthenticationFailed()
    if result.mfa_enrolled:
        if body.totp_code is None:
            await run_in_threadpool(
                _refuse, ctx.rt, actor, result.account_id, result.username, "TOTP code missing"
            )
            raise AuthenticationFailed()
        await svc.verify_totp(result.account_id, body.totp_code.get_secret_value(), actor=actor)
    if result.must_change:
        await run_in_threadpool(
            _refuse, ctx.rt, actor, result.account_id, result.username, "password must change"
        )
        return JSONResponse(
            {"detail": "The password must be changed first; use the admin portal."},
            status_code=403,
        )
    issued = await run_in_threadpool(
        lambda: ctx.creds.open_session(result.account_id, client=client, actor=actor)
    )
    now = svc.clock.now()
    return LoginOut(
        access_token=issued.token,
        expires_at=issued.expires_at,
        expires_in=int((issued.expires_at - now).total_seconds()),
    )


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this login")
async def logout(ctx: Ctx, who: Caller, actor: CallerActor) -> None:
    """Revoke the bearer token used for this request (API keys are revoked separately)."""
    if who.kind != "admin":
        raise Forbidden("API keys are revoked with DELETE /api/v1/api-keys/{name}.")
    await run_in_threadpool(lambda: ctx.creds.close_session(who.credential_id, actor=actor))


@router.get("/auth/whoami", response_model=WhoAmI, summary="The authenticated caller")
async def whoami(who: Caller, client: Client) -> WhoAmI:
    """Who this credential acts as, and the client address the gateway sees."""
    return WhoAmI(kind=who.kind, name=who.name, client=client)


def _admin_only(kind: str) -> None:
    if kind != "admin":
        raise Forbidden("API keys are managed only with an administrator login.")


@router.get("/api-keys", response_model=list[ApiKeyOut], tags=["api-keys"], summary="List API keys")
async def list_keys(ctx: Ctx, who: Caller) -> list[ApiKeyOut]:
    """Every key, live and revoked, with its last use (never the key itself)."""
    _admin_only(who.kind)
    keys = await run_in_threadpool(ctx.creds.list_keys)
    return [ApiKeyOut.of(k) for k in keys]


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["api-keys"],
    summary="Create an API key",
)
async def create_key(body: ApiKeyIn, ctx: Ctx, who: Caller, actor: CallerActor) -> ApiKeyCreated:
    """Create a key; the key is in this answer only and is stored as a hash."""
    _admin_only(who.kind)
    info, key = await run_in_threadpool(lambda: ctx.creds.create_key(body.name, actor=actor))
    return ApiKeyCreated(key=key, api_key=ApiKeyOut.of(info))


@router.delete(
    "/api-keys/{ref}", response_model=ApiKeyOut, tags=["api-keys"], summary="Revoke an API key"
)
async def revoke_key(ref: str, ctx: Ctx, who: Caller, actor: CallerActor) -> ApiKeyOut:
    """Revoke the key named ``ref``; it stops working at once."""
    _admin_only(who.kind)
    info = await run_in_threadpool(lambda: ctx.creds.revoke_key(ref, actor=actor))
    return ApiKeyOut.of(info)
