"""``gateway user import``: create many users from a CSV file, each through the core."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.errors import Conflict, PolicyViolation
from gateway.runtime import Runtime

COLUMNS = ("username", "email", "display_name", "groups", "never_expires")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "y")


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of the CSV file; ``username`` and ``email`` are required columns."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"username", "email"} - set(reader.fieldnames or ())
        if missing:
            raise typer.BadParameter(f"missing column(s): {', '.join(sorted(missing))}")
        unknown = set(reader.fieldnames or ()) - set(COLUMNS)
        if unknown:
            raise typer.BadParameter(f"unknown column(s): {', '.join(sorted(unknown))}")
        return [dict(row) for row in reader]


def register(user_app: typer.Typer) -> None:
    """Add ``import`` to the ``user`` command group."""
    from gateway.cli import admin_actor, emit, run

    @user_app.command("import")
    def user_import(
        csv_file: Annotated[Path, typer.Argument(help="CSV with a header: " + ",".join(COLUMNS))],
        generate: Annotated[
            bool, typer.Option("--generate", help="Give each new user a temporary password.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Import users from CSV; existing usernames/e-mails are skipped and reported.

        Generated temporary passwords are printed once (JSON: ``temporary_password``);
        without ``--generate`` users get no password and need a reset link.
        """
        rows = read_rows(csv_file)

        async def go(rt: Runtime) -> list[dict[str, Any]]:
            results: list[dict[str, Any]] = []
            for number, row in enumerate(rows, start=2):
                entry: dict[str, Any] = {"line": number, "username": row["username"]}
                try:
                    _view, generated = await rt.service.create_account(
                        kind="user",
                        username=row["username"],
                        email=row["email"],
                        actor=admin_actor(),
                        generate=generate,
                        display_name=(row.get("display_name") or "").strip(),
                        groups=[g for g in (row.get("groups") or "").split(";") if g.strip()],
                        never_expires=_truthy(row.get("never_expires") or ""),
                    )
                    entry["result"] = "created"
                    if generated:
                        entry["temporary_password"] = generated
                except (Conflict, PolicyViolation) as exc:
                    entry["result"] = "skipped"
                    entry["reason"] = str(exc)
                results.append(entry)
            return results

        results = run(go)

        def text() -> None:
            for r in results:
                extra = r.get("reason") or (
                    f"temporary password: {r['temporary_password']}"
                    if "temporary_password" in r
                    else ""
                )
                typer.echo(f"line {r['line']:>4} {r['username']:<24} {r['result']:<8} {extra}")
            created = sum(1 for r in results if r["result"] == "created")
            typer.echo(f"{created} created, {len(results) - created} skipped")

        emit(results, as_json, text)
        if any(r["result"] != "created" for r in results):
            raise typer.Exit(1)
