"""Admin API: propagation status per account and resource, retry and discard (all audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway import propagation_status
from gateway.propagation_status import Selection
from gateway.web.api_base import ApiRoute, CallerActor, Ctx

router = APIRouter(route_class=ApiRoute, prefix="/sync", tags=["sync"])


class SyncRow(BaseModel):
    """The desired state of one account at one resource and how its delivery goes."""

    account: str
    resource: str
    status: str
    version: int
    delivered_version: int
    attempts: int
    next_try_at: datetime | None
    last_error: str
    password_pending: bool = Field(description="A new password waits (never the password).")
    changed_at: datetime | None
    delivered_at: datetime | None
    leased_by: str | None


class SyncSelection(BaseModel):
    """Which rows to act on; both empty means every row."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(default=None, max_length=320)
    resource: str | None = Field(default=None, max_length=64)


class SyncCount(BaseModel):
    """How many rows the action touched."""

    count: int


AccountQ = Annotated[str | None, Query(max_length=320, description="Username or e-mail.")]
ResourceQ = Annotated[str | None, Query(max_length=64, description="Resource policy name.")]


@router.get("", response_model=list[SyncRow], summary="Propagation status")
async def sync_status(
    ctx: Ctx, actor: CallerActor, account: AccountQ = None, resource: ResourceQ = None
) -> list[SyncRow]:
    """One row per (account, resource): state, versions, next try, last error."""
    sel = Selection(account=account, resource=resource)
    now = ctx.rt.service.clock.now()
    rows = await run_in_threadpool(propagation_status.status, ctx.rt.store, sel, actor, now)
    return [SyncRow.model_validate(r) for r in rows]


@router.post("/retry", response_model=SyncCount, summary="Retry dead or retrying rows now")
async def sync_retry(body: SyncSelection, ctx: Ctx, actor: CallerActor) -> SyncCount:
    """Make dead and retrying rows due now."""
    sel = Selection(account=body.account, resource=body.resource)
    now = ctx.rt.service.clock.now()
    count = await run_in_threadpool(propagation_status.retry, ctx.rt.store, sel, actor, now)
    return SyncCount(count=count)


@router.post("/discard", response_model=SyncCount, summary="Discard pending deliveries")
async def sync_discard(body: SyncSelection, ctx: Ctx, actor: CallerActor) -> SyncCount:
    """Stop delivering what is pending (a pending password is wiped)."""
    sel = Selection(account=body.account, resource=body.resource)
    now = ctx.rt.service.clock.now()
    count = await run_in_threadpool(propagation_status.discard, ctx.rt.store, sel, actor, now)
    return SyncCount(count=count)
