"""CLI: ``gateway user send-reset ACCOUNT`` and ``gateway admin send-reset ACCOUNT``.

The mail is queued with a link valid 24 h (admin-initiated); the daemon's mail sender delivers
it. The link itself is never printed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.runtime import Runtime


def _send(kind: str, account: str, as_json: bool) -> None:
    from gateway import cli
    from gateway.resets import ResetFlows

    async def go(rt: Runtime) -> dict[str, object]:
        flows = ResetFlows(rt)
        await flows.send_admin_reset(account, actor=cli.admin_actor(), kind=kind)
        view = await rt.service.get_account(account)
        return {
            "account": view.username,
            "email": view.email,
            "queued": True,
            "valid_hours": rt.org_policy.reset.admin_initiated_hours,
        }

    out = cli.run(go)
    cli.emit(
        out,
        as_json,
        lambda: typer.echo(
            f"queued a password reset e-mail to {out['email']} (link valid {out['valid_hours']} h)"
        ),
    )


def register(user_app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add the ``send-reset`` commands to the ``user`` and ``admin`` command groups."""

    @user_app.command("send-reset")
    def user_send_reset(
        account: str,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Queue a password reset e-mail for a user (link valid 24 hours)."""
        _send("user", account, as_json)

    @admin_app.command("send-reset")
    def admin_send_reset(
        account: str,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Queue a password reset e-mail for an administrator (link valid 24 hours)."""
        _send("admin", account, as_json)
