"""``GET /metrics``: Prometheus text counters for RADIUS, the hash pool and propagation.

Only direct peers listed in ``[http] metrics_allow`` (default: loopback) may read it; any other
client gets 404, and ``X-Forwarded-For`` is never consulted here. No account names, no secrets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from gateway.runtime import Runtime
from gateway.web.security import parse_networks

router = APIRouter()

RADIUS_COUNTERS = (
    "accepts",
    "rejects",
    "challenges",
    "duplicates",
    "accounting",
    "hash_saturation",
    "cache_hits",
    "cache_misses",
)


def _allowed(request: Request, rt: Runtime) -> bool:
    peer = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in parse_networks(rt.settings.http.metrics_allow))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(rt: Runtime) -> str:
    """The exposition text for one runtime."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP gateway_{name} {help_text}")
        lines.append(f"# TYPE gateway_{name} {kind}")
        lines.extend(f"gateway_{name}{labels} {value}" for labels, value in samples)

    metric("hash_inflight", "gauge", "argon2id jobs queued or running.", [("", rt.hasher.inflight)])
    metric(
        "hash_shed_total",
        "counter",
        "Requests shed because the hash pool was full.",
        [("", rt.hasher.saturated)],
    )
    dispatcher = rt.extras.get("propagation.dispatcher")
    if dispatcher is not None:
        metric(
            "propagation_delivered_total",
            "counter",
            "Desired-state rows delivered by this node.",
            [("", dispatcher.delivered)],
        )
    radius = rt.extras.get("radius.metrics")
    if radius is not None:
        snap = radius.snapshot()
        for key in RADIUS_COUNTERS:
            metric(
                f"radius_{key}_total", "counter", f"RADIUS {key} on this node.", [("", snap[key])]
            )
        metric(
            "radius_discards_total",
            "counter",
            "RADIUS packets discarded, by reason.",
            [(f'{{reason="{_label(r)}"}}', n) for r, n in sorted(snap["discards"].items())],
        )
        metric(
            "radius_decision_ms",
            "gauge",
            "Recent RADIUS decision time percentiles in milliseconds.",
            [
                ('{quantile="0.5"}', snap["decision_ms_p50"]),
                ('{quantile="0.99"}', snap["decision_ms_p99"]),
            ],
        )
    return "\n".join(lines) + "\n"


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; 404 for clients outside ``metrics_allow``."""
    rt: Runtime = request.app.state.rt
    if not _allowed(request, rt):
        return PlainTextResponse("Not Found", status_code=404)
    return PlainTextResponse(render(rt), media_type="text/plain; version=0.0.4")
