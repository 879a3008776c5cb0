"""``gateway sync``: propagation status per account and resource, retry and discard (audited)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gateway.cli import admin_actor, emit, fail, run
from gateway.propagation_status import Selection, discard, retry, status
from gateway.runtime import Runtime

sync_app = typer.Typer(no_args_is_help=True, help="Propagation to the connected resources.")

AccountArg = Annotated[str | None, typer.Argument(help="Username or e-mail (default: all).")]
ResourceOpt = Annotated[str | None, typer.Option("--resource", help="Only this resource.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every account.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _line(r: dict[str, Any]) -> str:
    line = f"{r['account']:<24} {r['resource']:<16} {r['status']:<10} v{r['version']}"
    if r["status"] == "delivered":
        line += f" at {r['delivered_at']}"
    elif r["status"] == "retrying":
        line += f" attempt {r['attempts']}, next try {r['next_try_at']}: {r['last_error']}"
    elif r["status"] in ("dead", "discarded"):
        line += f": {r['last_error']}"
    else:
        line += f" (delivered v{r['delivered_version']})"
    return line


@sync_app.command("status")
def status_cmd(
    account: AccountArg = None, resource: ResourceOpt = None, as_json: JsonOpt = False
) -> None:
    """Show delivered / pending / retrying (next try, last error) / dead rows."""
    sel = Selection(account, resource)

    async def go(rt: Runtime) -> list[dict[str, Any]]:
        return status(rt.store, sel, admin_actor(), rt.service.clock.now())

    rows = run(go)

    def text() -> None:
        for r in rows:
            typer.echo(_line(r))
        if not rows:
            typer.echo("nothing to propagate")

    emit(rows, as_json, text)


def _selection(account: str | None, resource: str | None, every: bool) -> Selection:
    if not (account or resource or every):
        raise fail("name an account, a --resource, or --all", 2)
    return Selection(account, resource)


@sync_app.command("retry")
def retry_cmd(
    account: AccountArg = None, resource: ResourceOpt = None, every: AllOpt = False
) -> None:
    """Deliver dead or retrying rows again now (a wiped password is not resent)."""
    sel = _selection(account, resource, every)

    async def go(rt: Runtime) -> int:
        count = retry(rt.store, sel, admin_actor(), rt.service.clock.now())
        return count

    typer.echo(f"{run(go)} row(s) queued for delivery")


@sync_app.command("discard")
def discard_cmd(
    account: AccountArg = None, resource: ResourceOpt = None, every: AllOpt = False
) -> None:
    """Stop delivering what is pending (the sealed password is wiped)."""
    sel = _selection(account, resource, every)

    async def go(rt: Runtime) -> int:
        return discard(rt.store, sel, admin_actor(), rt.service.clock.now())

    typer.echo(f"{run(go)} row(s) discarded")


@sync_app.command("reconcile")
def reconcile_cmd(account: AccountArg = None, as_json: JsonOpt = False) -> None:
    """Create missing rows for resources added or re-scoped since an account last changed.

    Each covered account gets its current state (enabled, locked, expired) at every resource
    that has no row for it yet; no password is re-sent. Audited.
    """

    async def go(rt: Runtime) -> int:
        return await rt.service.reconcile(account, actor=admin_actor())

    count = run(go)
    emit(
        {"accounts": count},
        as_json,
        lambda: typer.echo(f"offered {count} account(s) to every covering resource"),
    )
