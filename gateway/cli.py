"""The ``gateway`` command line (typer). Exit codes: 0 ok, 1 refused by policy, 2 usage/config.

Passwords never come from argv: they are prompted for, read from ``--password-file``, or read
from standard input with ``--password-file -``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gateway.audit import Actor
from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    GatewayError,
    NotFound,
    PolicyFileError,
    PolicyViolation,
)
from gateway.runtime import Runtime, build
from gateway.settings import Settings, load_settings
from gateway.views import AccountView

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
user_app = typer.Typer(no_args_is_help=True, help="Manage users.")
admin_app = typer.Typer(no_args_is_help=True, help="Manage administrators.")
app.add_typer(user_app, name="user")
app.add_typer(admin_app, name="admin")

_state: dict[str, Any] = {"config": None}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the password from this file ('-' for stdin)."),
]


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", envvar="GATEWAY_CONFIG", help="Settings TOML file.")
    ] = None,
) -> None:
    """Credential gateway: passwords, expiry and lockout, propagated to every directory."""
    _state["config"] = config


def settings() -> Settings:
    """Settings for this invocation."""
    return load_settings(_state["config"])


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run(fn: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
    """Build the runtime, run one coroutine, map gateway errors to exit codes."""
    try:
        rt = build(settings())
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    try:
        return asyncio.run(fn(rt))
    except (PolicyViolation, PolicyFileError) as exc:
        raise fail(str(exc), 1) from None
    except (NotFound, Conflict, AuthenticationFailed) as exc:
        raise fail(str(exc), 1) from None
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    except GatewayError as exc:
        raise fail(str(exc), 1) from None
    finally:
        rt.close()


def read_password(path: Path | None, *, prompt: bool, confirm: bool = True) -> str | None:
    """A password from a file, stdin ('-'), or an interactive prompt; never from argv."""
    if path is not None:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        return text.removesuffix("\n")
    if prompt and sys.stdin.isatty():
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
        return value
    return None


def admin_actor() -> Actor:
    """The operator running the CLI."""
    import getpass

    return Actor(f"cli:{getpass.getuser()}", via="cli")


def emit(data: Any, as_json: bool, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``text`` to print it for humans."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        text()


def _show(acc: AccountView) -> None:
    rows = [
        ("username", acc.username),
        ("kind", acc.kind),
        ("email", acc.email),
        ("state", acc.state),
        (
            "locked",
            f"yes (until {acc.locked_until or 'admin unlock'}, {acc.lock_reason})"
            if acc.locked
            else "no",
        ),
        ("failed attempts", acc.failed_count),
        ("must change", acc.must_change),
        ("temporary password", acc.temporary),
        ("never expires", acc.never_expires),
        ("password set", acc.password_set),
        ("password changed", acc.password_changed_at),
        ("password expires", acc.password_expires_at),
        ("mfa enrolled", acc.mfa_enrolled),
        ("recovery email", acc.recovery_email or "-"),
        ("recovery verified", acc.recovery_email_verified_at or "-"),
        ("groups", ", ".join(acc.groups) or "-"),
        ("last login", acc.last_login_at or "-"),
    ]
    for key, value in rows:
        typer.echo(f"{key:>20}: {value}")


# ------------------------------------------------------------------ init / serve
@app.command()
def init() -> None:
    """Create the key file and create or upgrade the database. Never prompts."""
    from gateway.sealing import create_key_file
    from gateway.store.engine import make_engine
    from gateway.store.migrate import upgrade

    try:
        cfg = settings()
        created = create_key_file(Path(cfg.secrets.key_file))
        engine = make_engine(cfg.database.url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        Path(cfg.mail.maildir).mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"key file: {cfg.secrets.key_file} ({'created' if created else 'kept'})")
    typer.echo("database: up to date")


@app.command()
def serve() -> None:
    """Run the daemon (HTTP portal and API, scheduler, RADIUS, propagation)."""
    from gateway import daemon

    try:
        cfg = settings()
        logging.basicConfig(
            level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        rt = build(cfg)
        asyncio.run(daemon.serve(rt))
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


# ------------------------------------------------------------------ accounts
def _add(
    kind: str,
    username: str,
    email: str,
    password_file: Path | None,
    generate: bool,
    groups: list[str],
    never_expires: bool,
    as_json: bool,
) -> None:
    if generate and password_file is not None:
        raise fail("use either --password-file or --generate", 2)
    password = None if generate else read_password(password_file, prompt=True)

    async def go(rt: Runtime) -> tuple[AccountView, str | None]:
        return await rt.service.create_account(
            kind=kind,
            username=username,
            email=email,
            actor=admin_actor(),
            password=password,
            generate=generate,
            groups=groups,
            never_expires=never_expires,
        )

    acc, generated = run(go)
    out = acc.to_json()
    if generated:
        out["temporary_password"] = generated

    def text() -> None:
        typer.echo(f"created {kind} {acc.username} ({acc.email})")
        if generated:
            typer.echo(f"temporary password (shown once, must be changed): {generated}")
        elif not acc.password_set:
            typer.echo("no password set yet: send a reset link or set a temporary password")

    emit(out, as_json, text)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Option("--username")],
    email: Annotated[str, typer.Option("--email")],
    password_file: PasswordFile = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a temporary password.")
    ] = False,
    group: Annotated[list[str] | None, typer.Option("--group", help="Group (repeatable).")] = None,
    never_expires: Annotated[bool, typer.Option("--never-expires")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a user."""
    _add("user", username, email, password_file, generate, group or [], never_expires, as_json)


@admin_app.command("add")
def admin_add(
    username: Annotated[str, typer.Option("--username")],
    email: Annotated[str, typer.Option("--email")],
    password_file: PasswordFile = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a temporary password.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add an administrator."""
    _add("admin", username, email, password_file, generate, [], False, as_json)


@user_app.command("show")
def user_show(account: str, as_json: JsonOpt = False) -> None:
    """Show one account (by username or e-mail)."""
    acc = run(lambda rt: rt.service.get_account(account))
    emit(acc.to_json(), as_json, lambda: _show(acc))


def _list(kind: str | None, as_json: bool) -> None:
    accounts = run(lambda rt: rt.service.list_accounts(kind))

    def text() -> None:
        for acc in accounts:
            flags = ",".join(
                f
                for f, on in (
                    ("locked", acc.locked),
                    ("must-change", acc.must_change),
                    ("disabled", acc.state != "active"),
                )
                if on
            )
            typer.echo(f"{acc.username:<24} {acc.kind:<6} {acc.email:<32} {flags or 'ok'}")

    emit([a.to_json() for a in accounts], as_json, text)


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users."""
    _list("user", as_json)


@admin_app.command("list")
def admin_list(as_json: JsonOpt = False) -> None:
    """List administrators."""
    _list("admin", as_json)


@user_app.command("lock")
def user_lock(
    account: str,
    minutes: Annotated[
        int | None, typer.Option("--minutes", help="Unlock after N minutes.")
    ] = None,
) -> None:
    """Lock an account (until an admin unlocks it, or for --minutes)."""

    async def go(rt: Runtime) -> None:
        until = rt.service.clock.now() + timedelta(minutes=minutes) if minutes else None
        await rt.service.lock(account, actor=admin_actor(), until=until)

    run(go)
    typer.echo(f"locked {account}")


@user_app.command("unlock")
def user_unlock(account: str) -> None:
    """Clear the lock and the failure count; the password stays."""
    run(lambda rt: rt.service.unlock(account, actor=admin_actor()))
    typer.echo(f"unlocked {account}")


@user_app.command("expire")
def user_expire(account: str) -> None:
    """Expire the password now; the user must set a new one."""
    run(lambda rt: rt.service.expire(account, actor=admin_actor()))
    typer.echo(f"expired the password of {account}")


@user_app.command("set-temp-password")
def user_set_temp_password(
    account: str, password_file: PasswordFile = None, as_json: JsonOpt = False
) -> None:
    """Set a must-change temporary password (generated unless --password-file is given)."""
    typed = read_password(password_file, prompt=False)
    generated = run(
        lambda rt: rt.service.set_temporary_password(account, typed, actor=admin_actor())
    )
    out = (
        {"account": account, "temporary_password": generated} if generated else {"account": account}
    )

    def text() -> None:
        typer.echo(f"temporary password set for {account}; it must be changed at next login")
        if generated:
            typer.echo(f"temporary password (shown once): {generated}")

    emit(out, as_json, text)


@app.command("audit")
def audit_cmd(
    account: Annotated[str | None, typer.Option("--account")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show the newest audit rows."""
    rows = run(lambda rt: rt.service.audit_log(account, limit))

    def text() -> None:
        for r in rows:
            typer.echo(
                f"{r['at']} {r['actor']:<20} {r['action']:<22} {r['subject']:<20} "
                f"{r['outcome']:<8} {r['reason']} {r['via']} {r['client']}"
            )

    emit(rows, as_json, text)


# ------------------------------------------------------------------ other areas' commands
# (each area registers its typer sub-app or commands here, one line per area)
def _register() -> None:
    from gateway import cli_apikey, cli_import, cli_policy, cli_reset

    app.add_typer(cli_apikey.apikey_app, name="apikey")
    cli_reset.register(user_app, admin_app)  # user/admin send-reset
    cli_policy.register(app)  # policy check|plan|schema, sync status|retry|discard
    cli_import.register(user_app)  # user import


_register()


def main() -> None:
    """Console-script entry point."""
    app()
