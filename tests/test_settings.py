"""Settings: TOML file and GATEWAY_* variables, argon2 floor, private secret files, references."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.runtime import build
from gateway.settings import load_settings, read_secret, secret_from_ref


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings records the config path in GATEWAY_CONFIG; monkeypatch restores it
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("GATEWAY_DATABASE__URL", raising=False)


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / "s.toml", '[database]\nurl = "sqlite:///x.db"\n[http]\nlisten = ":9"\n')
    s = load_settings(cfg)
    assert s.database.url == "sqlite:///x.db" and s.http.listen == ":9"
    monkeypatch.setenv("GATEWAY_DATABASE__URL", "sqlite:///from-env.db")
    assert load_settings(cfg).database.url == "sqlite:///from-env.db"  # env wins over the file


def test_example_file_is_valid() -> None:
    s = load_settings(Path("settings.example.toml"))
    assert s.hashing.memory_kib == 19456 and s.hashing.time_cost == 2


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    cfg = write(tmp_path / "s.toml", "[hashing]\nmemory_kib = 4096\n")
    with pytest.raises(ConfigError, match=r"hashing\.memory_kib"):
        load_settings(cfg)
    cfg = write(tmp_path / "s.toml", "[hashing]\ntime_cost = 1\n")
    with pytest.raises(ConfigError, match=r"hashing\.time_cost"):
        load_settings(cfg)
    cfg = write(tmp_path / "s.toml", "[database]\nurll = 'x'\n")
    with pytest.raises(ConfigError, match=r"database\.urll"):
        load_settings(cfg)


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o700 | 0o004])
def test_readable_secret_file_refused_with_clear_message(tmp_path: Path, mode: int) -> None:
    secret = write(tmp_path / "smtp.secret", "hunter2-long-secret\n", mode)
    cfg = write(tmp_path / "s.toml", f'[mail]\npassword_file = "{secret}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    message = str(err.value)
    assert str(secret) in message and "readable by group or others" in message
    assert f"chmod 600 {secret}" in message and f"{mode:04o}" in message
    assert "hunter2" not in message
    secret.chmod(0o600)
    assert load_settings(cfg).mail.password_file == secret


def test_missing_secret_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "s.toml", f'[mail]\npassword_file = "{tmp_path / "nope"}"\n')
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(cfg)


def test_loose_key_file_refused_at_start(tmp_path: Path) -> None:
    from tests.support.runtime import make_settings

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    Path(settings.secrets.key_file).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        build(settings)
    Path(settings.secrets.key_file).chmod(0o600)
    build(settings).close()


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = write(tmp_path / "s", "s3cr3t-value\n")
    assert secret_from_ref(f"file:{secret}").get_secret_value() == "s3cr3t-value"
    assert read_secret(secret).get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(read_secret(secret))
    monkeypatch.setenv("GW_TEST_SECRET", "from-env")
    assert secret_from_ref("env:GW_TEST_SECRET").get_secret_value() == "from-env"
    with pytest.raises(ConfigError, match="not set"):
        secret_from_ref("env:GW_TEST_SECRET_MISSING")
    for inline in ("s3cr3t", "plain:s3cr3t", "file:", "env:"):
        with pytest.raises(ConfigError, match="never inline"):
            secret_from_ref(inline)
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by group or others"):
        secret_from_ref(f"file:{secret}")
