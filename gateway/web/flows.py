"""The core's reset flows and organisation switches as the web pages reach them."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from gateway import org_overrides
from gateway.audit import Actor
from gateway.resets import ResetFlows
from gateway.runtime import Runtime


def load_flows(rt: Runtime) -> ResetFlows:
    """The runtime's one ResetFlows (shared through ``rt.extras``, so throttles are shared)."""
    found = rt.extras.get("resets")
    if isinstance(found, ResetFlows):
        return found
    made = ResetFlows(rt)
    rt.extras["resets"] = made
    return made


def recovery_enabled(rt: Runtime) -> bool:
    """Whether the organisation has the recovery e-mail feature on (admin override included)."""
    return org_overrides.recovery_enabled(rt)


async def set_recovery_enabled(rt: Runtime, on: bool, *, actor: Actor) -> None:
    """Switch the recovery e-mail feature through the core's organisation override (audited)."""
    await run_in_threadpool(org_overrides.set_recovery_enabled, rt, on, actor=actor)
