"""Smoke test of the service on both backends."""

from __future__ import annotations

import asyncio

import pytest

from gateway.audit import Actor
from gateway.errors import AuthenticationFailed
from gateway.runtime import Runtime

ADMIN = Actor("test")


def test_create_and_authenticate(rt: Runtime) -> None:
    async def go() -> None:
        await rt.service.create_account(
            kind="user",
            username="alice",
            email="alice@example.org",
            actor=ADMIN,
            password="Correct-Horse-77x",
        )
        ok = await rt.service.authenticate("ALICE", "Correct-Horse-77x", via="test")
        assert ok.username == "alice"
        with pytest.raises(AuthenticationFailed):
            await rt.service.authenticate("alice", "wrong-password-xx", via="test")
        with pytest.raises(AuthenticationFailed):
            await rt.service.authenticate("nobody", "wrong-password-xx", via="test")

    asyncio.run(go())
