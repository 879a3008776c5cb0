"""``gateway user import`` creates users through the core and reports skipped rows."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from gateway.settings import Settings


def _env(settings: Settings) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE__URL": settings.database.url,
        "GATEWAY_SECRETS__KEY_FILE": str(settings.secrets.key_file),
        "GATEWAY_POLICIES_DIR": str(settings.policies_dir),
        "GATEWAY_MAIL__MAILDIR": str(settings.mail.maildir),
    }


def test_import_creates_and_skips(tmp_path: Path, settings: Settings) -> None:
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "username,email,groups,never_expires\n"
        "carol,carol@example.org,staff;wifi,yes\n"
        "dave,dave@example.org,,\n"
        "carol2,CAROL@example.org,,\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    env = _env(settings)
    result = runner.invoke(app, ["user", "import", str(csv_file), "--generate", "--json"], env=env)
    assert result.exit_code == 1, result.output  # one row was skipped
    rows = json.loads(result.stdout)
    assert [r["result"] for r in rows] == ["created", "created", "skipped"]
    assert rows[2]["line"] == 4
    assert len(rows[0]["temporary_password"]) >= 12
    shown = runner.invoke(app, ["user", "show", "carol", "--json"], env=env)
    data = json.loads(shown.stdout)
    assert data["groups"] == ["staff", "wifi"]
    assert data["never_expires"] is True
    assert data["must_change"] is True


def test_import_refuses_unknown_columns(tmp_path: Path, settings: Settings) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("username,email,password\nx,x@example.org,secret\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["user", "import", str(csv_file)], env=_env(settings))
    assert result.exit_code == 2
    assert "password" in result.output
