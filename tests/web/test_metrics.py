"""GET /metrics: Prometheus text for allowed direct peers only; forwarded headers don't help."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.radius.metrics import Metrics
from gateway.runtime import Runtime
from gateway.web.app import create_app
from tests.support.runtime import make_runtime, make_settings


@pytest.fixture
def srt(tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(make_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}"))
    try:
        yield rt
    finally:
        rt.close()


def _get(rt: Runtime, peer: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(rt), client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/metrics", headers=headers or {})

    return asyncio.run(go())


def test_metrics_for_loopback(srt: Runtime) -> None:
    radius = Metrics()
    radius.accepts = 3
    radius.discard("bad_message_authenticator")
    radius.discard("unknown_client")
    radius.discard("unknown_client")
    srt.extras["radius.metrics"] = radius
    res = _get(srt, "127.0.0.1")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain")
    body = res.text
    assert "gateway_radius_accepts_total 3" in body
    assert 'gateway_radius_discards_total{reason="unknown_client"} 2' in body
    assert 'gateway_radius_discards_total{reason="bad_message_authenticator"} 1' in body
    assert "gateway_hash_shed_total 0" in body
    assert "# TYPE gateway_radius_rejects_total counter" in body


def test_metrics_refused_elsewhere_even_when_forwarded(srt: Runtime) -> None:
    assert _get(srt, "192.0.2.10").status_code == 404
    spoofed = _get(srt, "192.0.2.10", {"X-Forwarded-For": "127.0.0.1"})
    assert spoofed.status_code == 404
    assert "gateway_" not in spoofed.text
