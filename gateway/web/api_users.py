"""Admin API: users (list, get, create, update, delete, lock, unlock, expire, resets).

``{ref}`` is a numeric id, a username or an e-mail address; an administrator's account is not
a user here (404). Every change goes through the core, which audits it with the caller.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response, status

from gateway.web.api_base import ApiRoute, CallerActor, Ctx, account_of_kind
from gateway.web.api_models import (
    Accepted,
    AccountCreated,
    AccountOut,
    AdminResetIn,
    LockIn,
    RecoveryEmailIn,
    TemporaryPasswordIn,
    TemporaryPasswordOut,
    UserCreate,
    UserUpdate,
)
from gateway.web.flows import load_flows

router = APIRouter(route_class=ApiRoute, prefix="/users", tags=["users"])
KIND = "user"
ERRORS: dict[int | str, dict[str, object]] = {
    404: {"description": "No such user."},
    422: {"description": "Refused by a rule; `detail` says why."},
}


@router.get("", response_model=list[AccountOut], summary="List users")
async def list_users(ctx: Ctx) -> list[AccountOut]:
    """Every user, by username."""
    return [AccountOut.of(v) for v in await ctx.rt.service.list_accounts(KIND)]


@router.post(
    "",
    response_model=AccountCreated,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Username or e-mail taken."}, **ERRORS},
    summary="Create a user",
)
async def create_user(body: UserCreate, ctx: Ctx, actor: CallerActor) -> AccountCreated:
    """Create a user; ``generate_password`` returns a must-change temporary password once."""
    view, generated = await ctx.rt.service.create_account(
        kind=KIND,
        username=body.username,
        email=body.email,
        actor=actor,
        password=body.password.get_secret_value() if body.password else None,
        generate=body.generate_password,
        display_name=body.display_name,
        groups=body.groups,
        never_expires=body.never_expires,
    )
    return AccountCreated(account=AccountOut.of(view), temporary_password=generated)


@router.get("/{ref}", response_model=AccountOut, responses=ERRORS, summary="Get a user")
async def get_user(ref: str, ctx: Ctx) -> AccountOut:
    """One user by id, username or e-mail."""
    return AccountOut.of(await account_of_kind(ctx.rt, ref, KIND))


@router.patch(
    "/{ref}",
    response_model=AccountOut,
    responses={409: {"description": "E-mail taken."}, **ERRORS},
    summary="Update a user",
)
async def update_user(ref: str, body: UserUpdate, ctx: Ctx, actor: CallerActor) -> AccountOut:
    """Change profile fields and/or enable or disable the account."""
    svc = ctx.rt.service
    acc = await account_of_kind(ctx.rt, ref, KIND)
    fields = body.model_dump(exclude_unset=True, exclude={"enabled"})
    if fields:
        await svc.update_account(acc.id, actor=actor, **fields)
    if body.enabled is not None and body.enabled != (acc.state == "active"):
        await svc.set_state(acc.id, active=body.enabled, actor=actor)
    return AccountOut.of(await svc.get_account(acc.id))


@router.delete(
    "/{ref}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ERRORS,
    summary="Delete a user",
)
async def delete_user(ref: str, ctx: Ctx, actor: CallerActor) -> Response:
    """Delete the user and everything it owns (its audit history stays)."""
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await ctx.rt.service.delete_account(acc.id, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{ref}/lock", response_model=AccountOut, responses=ERRORS, summary="Lock a user")
async def lock_user(
    ref: str, ctx: Ctx, actor: CallerActor, body: LockIn | None = None
) -> AccountOut:
    """Lock now, for ``minutes`` or until an administrator unlocks."""
    svc = ctx.rt.service
    acc = await account_of_kind(ctx.rt, ref, KIND)
    minutes = body.minutes if body else None
    until = svc.clock.now() + timedelta(minutes=minutes) if minutes else None
    await svc.lock(acc.id, actor=actor, until=until)
    return AccountOut.of(await svc.get_account(acc.id))


@router.post("/{ref}/unlock", response_model=AccountOut, responses=ERRORS, summary="Unlock a user")
async def unlock_user(ref: str, ctx: Ctx, actor: CallerActor) -> AccountOut:
    """Clear the lock and the failure count; the password stays."""
    svc = ctx.rt.service
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await svc.unlock(acc.id, actor=actor)
    return AccountOut.of(await svc.get_account(acc.id))


@router.post(
    "/{ref}/expire", response_model=AccountOut, responses=ERRORS, summary="Expire a password"
)
async def expire_user(ref: str, ctx: Ctx, actor: CallerActor) -> AccountOut:
    """Expire the password now: the user must set a new one."""
    svc = ctx.rt.service
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await svc.expire(acc.id, actor=actor)
    return AccountOut.of(await svc.get_account(acc.id))


@router.post(
    "/{ref}/temporary-password",
    response_model=TemporaryPasswordOut,
    responses=ERRORS,
    summary="Set a temporary password",
)
async def temporary_password(
    ref: str, ctx: Ctx, actor: CallerActor, body: TemporaryPasswordIn | None = None
) -> TemporaryPasswordOut:
    """Must-change temporary password: generated (returned once) unless one is typed."""
    svc = ctx.rt.service
    acc = await account_of_kind(ctx.rt, ref, KIND)
    typed = body.password.get_secret_value() if body and body.password else None
    generated = await svc.set_temporary_password(acc.id, typed, actor=actor)
    return TemporaryPasswordOut(
        account=AccountOut.of(await svc.get_account(acc.id)), temporary_password=generated
    )


@router.put(
    "/{ref}/recovery-email",
    response_model=AccountOut,
    responses=ERRORS,
    summary="Set a recovery e-mail",
)
async def recovery_email(
    ref: str, body: RecoveryEmailIn, ctx: Ctx, actor: CallerActor
) -> AccountOut:
    """Set the user's recovery address; a "Verify Now!" mail is queued to it."""
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await load_flows(ctx.rt).set_recovery_email(acc.id, body.address, actor=actor)
    return AccountOut.of(await ctx.rt.service.get_account(acc.id))


@router.post(
    "/{ref}/admin-reset",
    response_model=TemporaryPasswordOut,
    responses=ERRORS,
    summary="Admin resets a user",
)
async def admin_reset(
    ref: str, body: AdminResetIn, ctx: Ctx, actor: CallerActor
) -> TemporaryPasswordOut:
    """Temporary password (generated or typed) and/or recovery e-mail in one step."""
    acc = await account_of_kind(ctx.rt, ref, KIND)
    typed = body.temporary_password.get_secret_value() if body.temporary_password else None
    generated = await load_flows(ctx.rt).admin_reset_user(
        acc.username,
        actor=actor,
        temporary_password=typed,
        generate=body.generate_password,
        recovery_email=body.recovery_email,
    )
    return TemporaryPasswordOut(
        account=AccountOut.of(await ctx.rt.service.get_account(acc.id)),
        temporary_password=generated,
    )


@router.post(
    "/{ref}/send-reset",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=ERRORS,
    summary="Send a password reset e-mail",
)
async def send_reset(ref: str, ctx: Ctx, actor: CallerActor) -> Accepted:
    """Queue a reset link (valid 24 hours) to the user's address."""
    acc = await account_of_kind(ctx.rt, ref, KIND)
    await load_flows(ctx.rt).send_admin_reset(acc.username, actor=actor)
    return Accepted(detail="password reset e-mail queued")
