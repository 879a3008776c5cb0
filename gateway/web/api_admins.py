"""Admin API: administrators (list, get, create, send a password reset e-mail)."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.web.api_base import ApiRoute, Caller, CallerActor, Ctx, Forbidden, account_of_kind
from gateway.web.api_models import Accepted, AccountCreated, AccountOut, AdminCreate
from gateway.web.flows import load_flows

router = APIRouter(route_class=ApiRoute, prefix="/admins", tags=["admins"])
KIND = "admin"
ERRORS: dict[int | str, dict[str, object]] = {
    404: {"description": "No such administrator."},
    422: {"description": "Refused by a rule; `detail` says why."},
}


@router.get("", response_model=list[AccountOut], summary="List administrators")
async def list_admins(ctx: Ctx) -> list[AccountOut]:
    """Every administrator, by username."""
    return [AccountOut.of(v) for v in await ctx.rt.service.list_accounts(KIND)]


@router.post(
    "",
    response_model=AccountCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "API keys cannot create administrators."},
        409: {"description": "Username or e-mail taken."},
        **ERRORS,
    },
    summary="Create an administrator",
)
async def create_admin(
    body: AdminCreate, ctx: Ctx, who: Caller, actor: CallerActor
) -> AccountCreated:
    """Create an administrator (administrator login only, not an API key)."""
    if who.kind != "admin":
        raise Forbidden("Administrators are created only with an administrator login.")
    view, generated = await ctx.rt.service.create_account(
        kind=KIND,
        username=body.username,
        email=body.email,
        actor=actor,
        password=body.password.get_secret_value() if body.password else None,
        generate=body.generate_password,
        display_name=body.display_name,
    )
    return AccountCreated(account=AccountOut.of(view), temporary_password=generated)


@router.get("/{ref}", response_model=AccountOut, responses=ERRORS, summary="Get an administrator")
async def get_admin(ref: str, ctx: Ctx) -> AccountOut:
    """One administrator by id, username or e-mail."""
    return AccountOut.of(await account_of_kind(ctx.rt, ref, KIND))


@router.post(
    "/{ref}/send-reset",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=ERRORS,
    summary="Send Password Reset Email",
)
async def send_reset(ref: str, ctx: Ctx, actor: CallerActor) -> Accepted:
    """Queue a "Password Reset" mail with a link valid 24 hours."""
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await load_flows(ctx.rt).send_admin_reset(acc.username, actor=actor)
    return Accepted(detail="password reset e-mail queued")
