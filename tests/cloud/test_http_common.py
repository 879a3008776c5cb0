"""Shared cloud plumbing: Retry-After parsing, secret-free messages, CA choice, ownership."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from connectors.base import AccountRef
from connectors.http_common import ENABLED_HINT, Suspensions, ca_bundle, retry_after, safe_text
from gateway.errors import ConfigError


def test_retry_after_forms() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(" 0 ") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert retry_after(format_datetime(datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), True), now) == 5.0


def test_safe_text_blanks_secrets_and_shortens() -> None:
    assert safe_text("bad password Hunter-2 here", ["Hunter-2"]) == "bad password *** here"
    assert len(safe_text("x" * 1000)) == 300


def test_ca_bundle_is_explicit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ca_bundle(str(tmp_path / "missing.pem"))
    assert Path(ca_bundle(None)).is_file()


def test_suspensions_claim_only_enabled_accounts() -> None:
    async def go() -> None:
        rule = Suspensions()

        async def enabled() -> bool:
            return True

        async def disabled() -> bool:
            return False

        owned: set[str] = set()
        assert await rule.plan(AccountRef("a"), True, owned, disabled) is None and owned == set()
        assert await rule.plan(AccountRef("a"), False, owned, disabled) is None
        assert await rule.plan(AccountRef("b"), True, owned, enabled) is True and owned == {
            "disabled"
        }
        lost: set[str] = set()  # redelivery whose owned set was lost: still recognised
        assert await rule.plan(AccountRef("b"), True, lost, disabled) is None and lost == {
            "disabled"
        }
        assert await rule.plan(AccountRef("b"), False, set(), disabled) is False
        hinted = AccountRef("c", {ENABLED_HINT: "true"})  # find_account just read it: no read
        assert await rule.plan(hinted, True, set(), disabled) is True
        hinted = AccountRef("d", {ENABLED_HINT: "false"})
        assert await rule.plan(hinted, True, set(), enabled) is None

    asyncio.run(go())


def test_calls_never_show_the_password() -> None:
    from connectors.google_directory import DirectoryCall
    from connectors.m365_graph import GraphCall

    secret = "Never-Shown-77!"
    graph = GraphCall("PATCH", "/users/x", {"passwordProfile": {"password": secret}}, (secret,))
    google = DirectoryCall("update", "x", {"password": secret}, (secret,))
    assert secret not in repr(graph) and secret not in repr(google)
