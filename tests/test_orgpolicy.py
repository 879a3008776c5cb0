"""org.toml: defaults, limits, and errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyFileError
from gateway.orgpolicy import ADMIN_TOTP_ATTEMPTS, OrgPolicy, load_org

SHIPPED = Path("policies")


def org_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "org.toml").write_text(text, encoding="utf-8")
    return tmp_path


def error(tmp_path: Path, text: str) -> PolicyFileError:
    with pytest.raises(PolicyFileError) as err:
        load_org(org_file(tmp_path, text))
    return err.value


def test_shipped_file_and_defaults(tmp_path: Path) -> None:
    assert load_org(SHIPPED) == OrgPolicy()
    assert load_org(tmp_path) == OrgPolicy()  # no file: defaults
    org = OrgPolicy()
    assert org.totp_attempts_for("admin") == ADMIN_TOTP_ATTEMPTS == 5
    assert (org.reset.self_service_hours, org.reset.admin_initiated_hours) == (1, 24)
    assert org.recovery_email.verify_hours == 4 and not org.recovery_email.enabled


def test_admin_totp_limit_fixed_user_configurable(tmp_path: Path) -> None:
    org = load_org(org_file(tmp_path, "[mfa]\nuser_totp_attempts = 3\n"))
    assert org.totp_attempts_for("user") == 3 and org.totp_attempts_for("admin") == 5


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("[lockout]\nthreshold = 0\n", 2, "lockout.threshold"),
        ("# c\n\n[passwords]\nmin_length = 8\n", 4, "passwords.min_length"),
        ("[passwords]\nmax_length = 65\n", 2, "passwords.max_length"),
        ("[expiry]\nwarn_days = 1\nmax_age = 3\n", 3, "expiry.max_age"),  # unknown key
        ("[lockout]\nthreshold = 'five'\n", 2, "lockout.threshold"),
        ("admin_password_history = 99\n[lockout]\n", 1, "admin_password_history"),
        ("[reset]\nself_service_hours = 2\n", 2, "reset.self_service_hours"),
        ("[nope]\nx = 1\n", 1, "nope"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    err = error(tmp_path, text)
    assert err.path == str(tmp_path / "org.toml")
    assert err.location == f"line {line}, field {field}"
    assert str(err).startswith(f"{tmp_path / 'org.toml'}:line {line}, field {field}: ")


def test_errors_with_comments_after_headers_and_keys(tmp_path: Path) -> None:
    # the shipped file puts comments after table headers and values
    text = (SHIPPED / "org.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("threshold"))
    lines[at] = "threshold = 0          # broken"
    err = error(tmp_path, "\n".join(lines) + "\n")
    assert err.location == f"line {at + 1}, field lockout.threshold"
    at = next(i for i, ln in enumerate(lines) if ln.startswith("min_length"))
    lines[at] = "min_length = 3  # too short"
    err = error(tmp_path, "\n".join(lines) + "\n")
    assert err.location == f"line {at + 1}, field passwords.min_length"


def test_cross_field_error_points_at_its_table(tmp_path: Path) -> None:
    err = error(tmp_path, "[expiry]\n\n[passwords]  # users\nmin_length = 40\nmax_length = 20\n")
    assert err.location == "line 3, field passwords"
    assert "min_length must not exceed max_length" in err.message


def test_syntax_error_has_line(tmp_path: Path) -> None:
    err = error(tmp_path, "[lockout]\nthreshold = 5\nwindow_minutes = = 3\n")
    assert err.location == "line 3"
