"""A gateway dispatcher in its own process, for kill -9 tests (run with ``python -m``).

Environment: ``GW_DB_URL``, ``GW_POLICIES``, ``GW_KEY``, ``GW_LEASE`` (seconds) and
``GW_MODE``: ``run`` (deliver), ``die`` (SIGKILL itself after the target accepted a delivery
and before the row is marked done) or ``hang`` (set ``RECORDING_HANG=1`` to block in apply).
The recording connector is registered; an ``ldap`` resource uses the real entry point.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors import registry
from gateway import dispatcher as dispatcher_module
from gateway.dispatcher import Dispatcher
from gateway.runtime import build
from gateway.settings import Settings
from tests.support.recording import NAME, RecordingConnector


def _die(*_args: Any, **_kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    registry.register(NAME, RecordingConnector)
    settings = Settings(
        database={"url": os.environ["GW_DB_URL"]},  # type: ignore[arg-type]
        secrets={"key_file": Path(os.environ["GW_KEY"])},  # type: ignore[arg-type]
        policies_dir=Path(os.environ["GW_POLICIES"]),
    )
    rt = build(settings)
    if os.environ.get("GW_MODE") == "die":
        dispatcher_module.complete = _die  # type: ignore[assignment]
    lease = timedelta(seconds=float(os.environ.get("GW_LEASE", "60")))
    dispatcher = Dispatcher(rt, lease=lease, poll_interval=0.2)
    await dispatcher.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
