"""Resource policy files pointing an ``m365`` and a ``google`` resource at the fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes.certs import TlsFiles, write_private
from tests.fakes.entra_graph import FakeGraph
from tests.fakes.google_directory import FakeDirectory


def resource_toml(
    connector: str, actions: dict[str, str], connection: dict[str, Any], concurrency: int = 20
) -> str:
    """The text of one resource file."""
    lines = [f'connector = "{connector}"', f"concurrency = {concurrency}", "[actions]"]
    lines += [f'{k} = "{v}"' for k, v in actions.items()]
    lines.append("[connection]")
    for k, v in connection.items():
        lines.append(f"{k} = {json.dumps(v)}")  # JSON scalars are valid TOML values
    return "\n".join(lines) + "\n"


def write_cloud_policies(
    policies: Path,
    secrets: Path,
    tls: TlsFiles,
    graph: FakeGraph,
    directory: FakeDirectory,
    key_path: Path,
    admin: str,
    *,
    concurrency: int = 20,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``office.toml`` (m365: expiry suspends) and ``workspace.toml`` (google: expiry
    forces a change); both suspend on lock and restore on unlock."""
    assert graph.client_secret is not None
    secret = write_private(secrets / "m365.secret", graph.client_secret)
    office = {
        "tenant": graph.tenant,
        "client_id": graph.client_id,
        "client_secret": f"file:{secret}",
        "authority_host": graph.authority,
        "graph_url": graph.graph_url,
        "ca_bundle": str(tls.ca),
        "timeout_s": 5.0,
        **(extra or {}),
    }
    workspace = {
        "service_account_key": f"file:{key_path}",
        "admin_subject": admin,
        "api_endpoint": directory.base + "/",
        "token_uri": directory.token_uri,
        "batch_uri": directory.base + "/batch",
        "ca_bundle": str(tls.ca),
        "timeout_s": 5.0,
        **(extra or {}),
    }
    common = {"locked": "suspend", "unlocked": "restore"}
    (policies / "office.toml").write_text(
        resource_toml("m365", {"expired": "suspend", **common}, office, concurrency),
        encoding="utf-8",
    )
    (policies / "workspace.toml").write_text(
        resource_toml("google", {"expired": "force_change", **common}, workspace, concurrency),
        encoding="utf-8",
    )
