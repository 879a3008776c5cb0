"""``gateway policy``: check the policy files, plan what each resource would do, export the schema.

``plan`` asks the same function the dispatcher uses (``gateway.desired.desired_state``) what
each resource would be told for each trigger; nothing is changed and nothing is contacted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from connectors.base import DesiredState
from gateway.cli import emit, fail, run, settings
from gateway.desired import AccountState, desired_state, sends_password
from gateway.errors import ConfigError, NotFound
from gateway.policies import TRIGGERS, ResourcePolicy, check_all, schema_text
from gateway.propagation_models import DesiredRow
from gateway.runtime import Runtime
from gateway.service import identity_key
from gateway.store.models import Account

policy_app = typer.Typer(no_args_is_help=True, help="Resource policy files.")

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Policies directory (default: from settings).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _policies_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    try:
        return Path(settings().policies_dir)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


@policy_app.command("check")
def check(directory: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Validate org.toml and every resource file; print file, line and field of each error."""
    where = _policies_dir(directory)
    if not where.is_dir():
        raise fail(f"{where} is not a directory", 2)
    errors = check_all(where)
    out = [{"file": e.path, "location": e.location, "message": e.message} for e in errors]

    def text() -> None:
        for e in errors:
            typer.echo(f"{e.path}:{e.location}: {e.message}")
        if not errors:
            typer.echo(f"{where}: all policy files are valid")

    emit(out, as_json, text)
    if errors:
        raise typer.Exit(1)


@policy_app.command("schema")
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the JSON Schema of resource files (for editors)."""
    text = schema_text()
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {output}")


def describe(desired: DesiredState, sends: bool, owned_before: frozenset[str]) -> str:
    """What a connector would be asked to do, in words."""
    parts = []
    if sends:
        parts.append("set the new password" + (" as temporary" if desired.temporary else ""))
    if desired.disabled:
        parts.append("disable the account")
    elif "disabled" in owned_before:
        parts.append("re-enable the account (only because the gateway disabled it)")
    if desired.force_change and not desired.temporary:
        parts.append("require a password change at next sign-in")
    return "; ".join(parts) or "nothing"


def _hypothetical(
    trigger: str, actions_locked_disables: bool
) -> tuple[AccountState, frozenset[str]]:
    if trigger == "password_change":
        return AccountState(password_pending=True), frozenset()
    if trigger == "expired":
        return AccountState(expired=True), frozenset()
    if trigger == "locked":
        return AccountState(locked=True), frozenset()
    owned = frozenset({"disabled"}) if actions_locked_disables else frozenset()
    return AccountState(), owned


def plan_resource(res: ResourcePolicy) -> dict[str, str]:
    """For each trigger, what this resource would be told (via the dispatcher's own rule)."""
    out: dict[str, str] = {}
    locks = desired_state(AccountState(locked=True), res.actions, version=0).disabled
    for trigger in TRIGGERS:
        state, owned = _hypothetical(trigger, locks)
        desired = desired_state(state, res.actions, version=0, owned=owned)
        sends = state.password_pending and sends_password(res.actions)
        out[trigger] = f"{getattr(res.actions, trigger)}: {describe(desired, sends, owned)}"
    return out


def _plan(rt: Runtime, account: str) -> dict[str, Any]:
    from gateway.outbox import covering

    with rt.store.read() as s:
        key = identity_key(account)
        acc = s.scalars(
            select(Account).where((Account.username_key == key) | (Account.email_key == key))
        ).first()
        if acc is None:
            raise NotFound(f"no account {account!r}")
        rows = {
            r.resource: r
            for r in s.scalars(select(DesiredRow).where(DesiredRow.account_id == acc.id))
        }
        covered = {r.name for r in covering(rt.policies, acc)}
        out: dict[str, Any] = {"account": acc.username, "resources": []}
        for name, res in sorted(rt.policies.resources.items()):
            entry: dict[str, Any] = {"resource": name, "connector": res.connector}
            if not res.enabled:
                entry["covers"] = "no (resource disabled)"
            elif name not in covered:
                entry["covers"] = "no (kind, groups or attributes do not match)"
            else:
                entry["covers"] = "yes"
                entry["on"] = plan_resource(res)
                row = rows.get(name)
                if row is not None:
                    now = AccountState(
                        locked=row.locked,
                        expired=row.expired,
                        account_disabled=row.account_disabled,
                        password_pending=row.sealed_password is not None,
                        temporary=row.temporary,
                    )
                    owned = frozenset(row.owned or ())
                    desired = desired_state(now, res.actions, version=row.version, owned=owned)
                    sends = now.password_pending and sends_password(res.actions)
                    entry["now"] = f"{row.status}: {describe(desired, sends, owned)}"
            out["resources"].append(entry)
    return out


@policy_app.command("plan")
def plan(account: str, as_json: JsonOpt = False) -> None:
    """Show what each resource would do for ACCOUNT on each trigger, without doing it."""

    async def go(rt: Runtime) -> dict[str, Any]:
        return _plan(rt, account)

    result = run(go)

    def text() -> None:
        typer.echo(f"account {result['account']}")
        if not result["resources"]:
            typer.echo("  no resource policies are loaded")
        for entry in result["resources"]:
            typer.echo(f"  {entry['resource']} ({entry['connector']}): covers {entry['covers']}")
            for trigger, what in entry.get("on", {}).items():
                typer.echo(f"    on {trigger:<16} {what}")
            if "now" in entry:
                typer.echo(f"    current row      {entry['now']}")

    emit(result, as_json, text)


def register(app: typer.Typer) -> None:
    """Add ``policy`` and ``sync`` to the main command line."""
    from gateway.cli_sync import sync_app

    app.add_typer(policy_app, name="policy")
    app.add_typer(sync_app, name="sync")
