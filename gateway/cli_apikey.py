"""``gateway apikey create|list|revoke``: API keys for automation against the admin API.

The key is printed once, at creation; only its SHA-256 is stored. Creating and revoking are
audited with the operator running the CLI.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.apikeys import ApiCredentials, KeyInfo
from gateway.runtime import Runtime

# gateway.cli imports this module at its end, so its helpers are imported when a command runs
apikey_app = typer.Typer(no_args_is_help=True, help="Manage admin API keys.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _creds(rt: Runtime) -> ApiCredentials:
    return ApiCredentials(rt.store, rt.service.clock)


def _json(info: KeyInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "key_id": info.key_id,
        "created_at": info.created_at.isoformat(),
        "created_by": info.created_by,
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "last_used_from": info.last_used_from,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@apikey_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="A unique name (never reused).")],
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it once."""
    from gateway.cli import admin_actor, emit, run

    async def go(rt: Runtime) -> tuple[KeyInfo, str]:
        return _creds(rt).create_key(name, actor=admin_actor())

    info, key = run(go)
    out = {**_json(info), "key": key}

    def text() -> None:
        typer.echo(f"created API key {info.name} (id {info.key_id})")
        typer.echo(f"key (shown once; use as 'Authorization: Bearer <key>'): {key}")

    emit(out, as_json, text)


@apikey_app.command("list")
def list_keys(as_json: JsonOpt = False) -> None:
    """List API keys with their last use (never the keys)."""
    from gateway.cli import emit, run

    async def go(rt: Runtime) -> list[KeyInfo]:
        return _creds(rt).list_keys()

    keys = run(go)

    def text() -> None:
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
            used = (
                f"last used {k.last_used_at:%Y-%m-%d %H:%M} from {k.last_used_from}"
                if k.last_used_at
                else "never used"
            )
            typer.echo(f"{k.name:<24} {k.key_id}  {state:<24} {used}  by {k.created_by}")

    emit([_json(k) for k in keys], as_json, text)


@apikey_app.command("revoke")
def revoke(name: str, as_json: JsonOpt = False) -> None:
    """Revoke an API key; it stops working at once."""
    from gateway.cli import admin_actor, emit, run

    async def go(rt: Runtime) -> KeyInfo:
        return _creds(rt).revoke_key(name, actor=admin_actor())

    info = run(go)
    emit(_json(info), as_json, lambda: typer.echo(f"revoked API key {info.name}"))
