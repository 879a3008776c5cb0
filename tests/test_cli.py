"""The CLI: init without prompts, exit codes 0/1/2, --json, passwords never from argv."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner, Result

from gateway.cli import app

PW = "Correct-Horse-77x"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A settings file for a fresh SQLite gateway in ``tmp_path`` (not yet initialised)."""
    (tmp_path / "policies").mkdir()
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'policies_dir = "{tmp_path / "policies"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "var" / "gateway.db"}"\n'
        f'[secrets]\nkey_file = "{tmp_path / "var" / "secret.key"}"\n'
        f'[mail]\nmaildir = "{tmp_path / "var" / "mail"}"\n',
        encoding="utf-8",
    )
    return path


def cli(cfg: Path, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        app, ["--config", str(cfg), *args], input=stdin, env={"GATEWAY_CONFIG": str(cfg)}
    )


def init_subprocess(cfg: Path) -> subprocess.CompletedProcess[str]:
    # stdin is an open pipe that never delivers anything: a prompt would hang until the timeout
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(cfg), "init"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GATEWAY_CONFIG": str(cfg)},
    ) as proc:
        out, err = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def ready(cfg: Path) -> Path:
    """An initialised gateway (init run through the CLI in-process)."""
    result = cli(cfg, "init")
    assert result.exit_code == 0, result.output
    return cfg


def secret_file(tmp: Path, text: str) -> Path:
    path = tmp / f"pw-{abs(hash(text))}"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_init_never_prompts_and_is_idempotent(cfg: Path) -> None:
    first = init_subprocess(cfg)
    assert first.returncode == 0, first.stderr
    key = cfg.parent / "var" / "secret.key"
    assert "created" in first.stdout and stat.S_IMODE(key.stat().st_mode) == 0o600
    again = init_subprocess(cfg)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (cfg.parent / "var" / "gateway.db").exists()


def test_usage_and_config_errors_exit_2(cfg: Path, tmp_path: Path) -> None:
    assert cli(tmp_path / "missing.toml", "init").exit_code == 2
    assert cli(cfg, "user", "list").exit_code == 2  # not initialised: no key file
    bad = tmp_path / "bad.toml"
    bad.write_text("[hashing]\nmemory_kib = 1024\n", encoding="utf-8")
    result = cli(bad, "user", "list")
    assert result.exit_code == 2 and "hashing.memory_kib" in result.output
    assert cli(cfg, "user", "frobnicate").exit_code == 2


def test_loose_key_file_exit_2(ready: Path) -> None:
    key = ready.parent / "var" / "secret.key"
    key.chmod(0o640)
    result = cli(ready, "user", "list")
    assert result.exit_code == 2 and f"chmod 600 {key}" in result.output


def test_no_command_takes_a_password_from_argv(ready: Path) -> None:
    result = cli(ready, "user", "add", "--username", "u1", "--email", "u1@x.org", "--password", PW)
    assert result.exit_code == 2 and "No such option" in result.output

    def walk(cmd: click.Command, path: str) -> None:
        for param in cmd.params:
            names = [n.lstrip("-") for n in getattr(param, "opts", [])]
            for name in names:
                if "password" in name or "secret" in name or name == "pw":
                    assert name == "password-file", f"{path} takes {name} from argv"
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "gateway")


def test_user_lifecycle_with_json(ready: Path, tmp_path: Path) -> None:
    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "alice",
        "--email",
        "alice@example.org",
        "--password-file",
        str(secret_file(tmp_path, PW)),
        "--json",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["username"] == "alice" and created["password_set"] is True
    assert "temporary_password" not in created

    # from standard input
    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "bob",
        "--email",
        "bob@example.org",
        "--password-file",
        "-",
        stdin=PW + "\n",
    )
    assert result.exit_code == 0, result.output
    # refused by policy: exit 1 with the reason, and the password is not echoed
    weak = "bob-is-my-password"
    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "carol",
        "--email",
        "carol@example.org",
        "--password-file",
        "-",
        stdin="short\n",
    )
    assert result.exit_code == 1 and "at least 12 characters" in result.output
    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "bob2",
        "--email",
        "bob@example.org",
        "--password-file",
        "-",
        stdin=weak,
    )
    assert result.exit_code == 1 and weak not in result.output  # conflict: e-mail in use
    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "dave",
        "--email",
        "dave@example.org",
        "--generate",
        "--password-file",
        "-",
        stdin=PW,
    )
    assert result.exit_code == 2

    # no terminal, no --password-file: no prompt, the account is created without a password
    result = cli(ready, "user", "add", "--username", "erin", "--email", "erin@example.org")
    assert result.exit_code == 0 and "no password set yet" in result.output

    result = cli(
        ready,
        "user",
        "add",
        "--username",
        "gen",
        "--email",
        "gen@example.org",
        "--generate",
        "--json",
    )
    assert result.exit_code == 0, result.output
    gen = json.loads(result.stdout)
    assert gen["must_change"] and gen["temporary"] and len(gen["temporary_password"]) >= 12

    for args in (("lock", "alice"), ("unlock", "alice"), ("expire", "bob")):
        assert cli(ready, "user", *args).exit_code == 0
    shown = json.loads(cli(ready, "user", "show", "BOB@example.org", "--json").stdout)
    assert shown["username"] == "bob" and shown["must_change"] is True
    assert not any("hash" in key or "seed" in key for key in shown)
    assert cli(ready, "user", "show", "nobody").exit_code == 1
    assert cli(ready, "user", "unlock", "nobody").exit_code == 1

    listed = json.loads(cli(ready, "user", "list", "--json").stdout)
    assert [u["username"] for u in listed] == ["alice", "bob", "erin", "gen"]
    temp = json.loads(cli(ready, "user", "set-temp-password", "erin", "--json").stdout)
    assert len(temp["temporary_password"]) >= 12
    typed = cli(
        ready,
        "user",
        "set-temp-password",
        "alice",
        "--password-file",
        "-",
        "--json",
        stdin="Typed-Temp-Pass-31",
    )
    assert typed.exit_code == 0 and json.loads(typed.stdout) == {"account": "alice"}

    result = cli(
        ready,
        "admin",
        "add",
        "--username",
        "root",
        "--email",
        "root@example.org",
        "--password-file",
        "-",
        stdin="root-password-long",
    )
    assert result.exit_code == 1 and "username" in result.output  # admin identity rule

    audit = cli(ready, "audit", "--json", "--limit", "200")
    assert audit.exit_code == 0
    rows = json.loads(audit.stdout)
    actions = {r["action"] for r in rows}
    assert {"user_add", "set_password", "lock", "unlock", "expire"} <= actions
    dump = audit.stdout + cli(ready, "audit").stdout
    for secret in (PW, "Typed-Temp-Pass-31", gen["temporary_password"], weak):
        assert secret not in dump
    alice_rows = json.loads(cli(ready, "audit", "--account", "alice", "--json").stdout)
    assert alice_rows and all(r["subject"] == "alice" for r in alice_rows)
