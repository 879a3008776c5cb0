"""The radius connector's Config (policy [connection]), its registration and the wire helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pyrad import packet as rp

from connectors.radius import RadiusConfig, RadiusConnector
from connectors.registry import connector_class
from gateway.policies import load_resource
from gateway.radius import wire
from gateway.radius.listener import component
from gateway.runtime import Runtime
from tests.radius.conftest import SECRET, client_config


def test_clients_networks_and_most_specific_match(tmp_path: Path) -> None:
    secret_file = tmp_path / "radius.secret"
    secret_file.write_text("from-a-file\n")
    secret_file.chmod(0o600)
    cfg = RadiusConfig.model_validate(
        {
            "clients": [
                {"name": "net", "address": "10.0.0.0/8", "secret": "env:GW_TEST_RADIUS_SECRET"},
                {"name": "ap", "address": "10.1.2.3", "secret": f"file:{secret_file}"},
                {"name": "v6", "address": "2001:db8::/32", "secret": "env:GW_TEST_RADIUS_SECRET"},
            ]
        }
    )
    assert cfg.client_for("10.1.2.3").name == "ap"  # type: ignore[union-attr]
    assert cfg.client_for("10.1.2.3").shared_secret() == b"from-a-file"  # type: ignore[union-attr]
    assert cfg.client_for("10.9.9.9").name == "net"  # type: ignore[union-attr]
    assert cfg.client_for("::ffff:10.9.9.9").name == "net"  # type: ignore[union-attr]
    assert cfg.client_for("2001:db8::5").name == "v6"  # type: ignore[union-attr]
    assert cfg.client_for("192.0.2.1") is None
    assert cfg.client_for("not-an-ip") is None
    assert SECRET not in repr(cfg) and "from-a-file" not in repr(cfg)


@pytest.mark.parametrize(
    "change",
    [
        {"clients": [{"address": "127.0.0.1", "secret": "inline-secret"}]},
        {"clients": [{"address": "127.0.0.1", "secret": "env:GW_NOT_SET_ANYWHERE"}]},
        {"clients": [{"address": "300.1.1.1", "secret": "env:GW_TEST_RADIUS_SECRET"}]},
        {"clients": []},
        {"mfa": "push"},
        {"group_replies": [{"group": "g", "attributes": {"No-Such-Attr": "1"}}]},
        {"group_replies": [{"group": "g", "attributes": {"User-Password": "x"}}]},
        {"group_replies": [{"group": "g", "attributes": {"Session-Timeout": "soon"}}]},
        {"unknown_key": 1},
    ],
)
def test_invalid_connection_settings(change: dict[str, object]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        RadiusConfig.model_validate(client_config(**change))


def test_policy_file_loads_through_the_entry_point(tmp_path: Path) -> None:
    assert connector_class("radius") is RadiusConnector
    path = tmp_path / "vpn.toml"
    path.write_text(
        'connector = "radius"\n[actions]\npassword_change = "maintain"\nexpired = "grace"\n'
        'locked = "disconnect"\nunlocked = "maintain"\n[connection]\nsuccess_cache_seconds = 30\n'
        '[[connection.clients]]\naddress = "192.0.2.0/24"\nsecret = "env:GW_TEST_RADIUS_SECRET"\n'
        '[[connection.group_replies]]\ngroup = "staff"\n'
        'attributes = { "Tunnel-Private-Group-Id:1" = "10", "Filter-Id" = ["a", "b"] }\n'
    )
    policy = load_resource(path)
    assert isinstance(policy.connection, RadiusConfig)
    assert policy.connection.reply_attributes(("staff",)) == [
        ("Tunnel-Private-Group-Id:1", "10"),
        ("Filter-Id", "a"),
        ("Filter-Id", "b"),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'connector = "radius"\n[actions]\npassword_change = "maintain"\nexpired = "reject"\n'
        'locked = "disable"\nunlocked = "maintain"\n'
        "[connection]\n"
        '[[connection.clients]]\naddress = "192.0.2.0/24"\nsecret = "env:GW_TEST_RADIUS_SECRET"\n'
    )
    with pytest.raises(Exception, match="locked"):
        load_resource(bad)
    assert RadiusConnector.password_limits[0].violation("x" * 129) is not None
    assert RadiusConnector.password_limits[0].violation("x" * 128) is None


def test_reply_encoding_puts_message_authenticator_first() -> None:
    req = rp.AuthPacket(secret=b"k", dict=wire.dictionary(), User_Name="u")
    req.AddAttribute("Proxy-State", b"p1")
    req.add_message_authenticator()
    raw = req.RequestPacket()
    decoded = wire.decode_access(raw, b"k")
    assert wire.ma_valid(decoded)
    for code in (wire.ACCESS_ACCEPT, wire.ACCESS_REJECT, wire.ACCESS_CHALLENGE):
        reply = wire.access_reply(decoded, code, (("Reply-Message", "hi"),))
        assert reply[20] == wire.MESSAGE_AUTHENTICATOR and reply[21] == 18
        parsed = decoded.CreateReply(packet=reply)
        assert decoded.VerifyReply(parsed, reply, enforce_ma=True)
        assert dict.__getitem__(parsed, wire.PROXY_STATE) == [b"p1"]
    with pytest.raises(wire.WireError):
        wire.decode_access(b"\x01\x00\x00\x30" + bytes(16), b"k")


def test_daemon_component_only_with_listen_and_policy(radius_rt: Runtime) -> None:
    assert component(radius_rt) is None  # no listen address, no radius resource
