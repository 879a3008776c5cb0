"""Admin API: the audit log, newest first, filtered by account, actor, action and time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from gateway.clock import aware
from gateway.runtime import Runtime
from gateway.store.models import AuditEntry
from gateway.web.api_base import ApiRoute, Ctx, account_ref
from gateway.web.api_models import AuditRow

router = APIRouter(route_class=ApiRoute, tags=["audit"])


def _query(
    rt: Runtime,
    account_id: int | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[AuditRow]:
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    conditions: list[Any] = []
    if account_id is not None:
        conditions.append(AuditEntry.account_id == account_id)
    if actor:
        conditions.append(AuditEntry.actor == actor)
    if action:
        conditions.append(AuditEntry.action == action)
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    if until is not None:
        conditions.append(AuditEntry.at < until)
    if before_id is not None:
        conditions.append(AuditEntry.id < before_id)
    with rt.store.read() as s:
        rows = s.scalars(stmt.where(*conditions)).all()
        return [
            AuditRow(
                id=r.id,
                at=aware(r.at) or r.at,
                actor=r.actor,
                action=r.action,
                account_id=r.account_id,
                subject=r.subject,
                outcome=r.outcome,
                reason=r.reason,
                via=r.via,
                client=r.client,
                details=dict(r.details or {}),
            )
            for r in rows
        ]


@router.get("/audit", response_model=list[AuditRow], summary="Query the audit log")
async def query_audit(
    ctx: Ctx,
    account: Annotated[str | None, Query(description="Id, username or e-mail.")] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[
        int | None, Query(ge=1, description="Page: rows older than this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditRow]:
    """Newest first; page with ``before_id`` set to the last id seen."""
    account_id = None
    if account is not None:
        ref = account_ref(account)  # a numeric id also finds rows of deleted accounts
        account_id = ref if isinstance(ref, int) else (await ctx.rt.service.get_account(ref)).id
    return await run_in_threadpool(
        _query, ctx.rt, account_id, actor, action, aware(since), aware(until), before_id, limit
    )
