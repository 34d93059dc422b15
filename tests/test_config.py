from __future__ import annotations

import math

import pytest

from trio_heartbeat import (
    ClientConfig,
    HandshakeError,
    Negotiated,
    ServerConfig,
    negotiate,
)


def test_defaults_come_from_the_sources() -> None:
    client = ClientConfig()
    assert (client.interval, client.retries, client.retry_interval) == (25.0, 5, 5.0)
    server = ServerConfig()
    assert server.timeout == 60.0
    assert server.handshake_timeout == 10.0
    assert server.min_interval == 1.0
    assert server.max_frame_size == 1 << 20
    assert server.enabled and client.enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "interval must be a positive number, not 0"),
        ({"interval": -1.5}, "interval must be a positive number, not -1.5"),
        ({"interval": math.nan}, "interval must be a positive number, not nan"),
        ({"retry_interval": math.inf}, "retry_interval must be a positive number"),
        ({"retries": -1}, "retries must be >= 0, not -1"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\), not 1.0"),
        ({"max_frame_size": 8}, "max_frame_size must be in 16..268435455, not 8"),
        ({"handshake_timeout": 0.0}, "handshake_timeout must be a positive number"),
    ],
)
def test_client_validation_names_field_and_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number, not 0"),
        (
            {"min_interval": 31.0},
            r"min_interval must be <= timeout / 2 \(30.0\), not 31.0",
        ),
        ({"max_connections": 0}, "max_connections must be >= 1, not 0"),
        ({"max_frame_size": 1 << 28}, "max_frame_size must be in 16..268435455"),
    ],
)
def test_server_validation_names_field_and_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="retries must be an int, not 2.5"):
        ClientConfig(retries=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="interval must be a number, not '25'"):
        ClientConfig(interval="25")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="interval must be a number, not True"):
        ClientConfig(interval=True)


def test_configs_are_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ServerConfig().timeout = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(25, 25.0), (0.1, 1.0), (1, 1.0), (30, 30.0), (45, 30.0), (1e9, 30.0)],
)
def test_negotiation_clamps_interval(requested: float, expected: float) -> None:
    result = negotiate({"version": 1, "interval": requested}, ServerConfig())
    assert result == Negotiated(
        interval=expected, timeout=60.0, min_interval=1.0, max_frame_size=1 << 20
    )


def test_negotiation_missing_interval_gets_half_timeout() -> None:
    assert negotiate({"version": 1}, ServerConfig(timeout=10)).interval == 5.0


def test_negotiation_with_custom_server() -> None:
    config = ServerConfig(timeout=8, min_interval=2)
    assert negotiate({"version": 1, "interval": 1}, config).interval == 2.0
    assert negotiate({"version": 1, "interval": 5}, config).interval == 4.0


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"version": 2, "interval": 25}, "unsupported protocol version 2"),
        (
            {"version": 1, "interval": "25"},
            "interval must be a positive number, not '25'",
        ),
        ({"version": 1, "interval": -3}, "interval must be a positive number, not -3"),
        ({"version": 1, "interval": True}, "interval must be a positive number"),
    ],
)
def test_negotiation_rejects(request_fields: dict[str, object], message: str) -> None:
    with pytest.raises(HandshakeError, match=message):
        negotiate(request_fields, ServerConfig())


def test_negotiated_round_trips_through_hello() -> None:
    result = negotiate({"version": 1, "interval": 20}, ServerConfig())
    assert Negotiated.from_hello(result.to_hello()) == result


@pytest.mark.parametrize(
    "fields",
    [
        {"version": 2, "interval": 1, "timeout": 2, "min_interval": 1},
        {"version": 1, "timeout": 2, "min_interval": 1},
        {"version": 1, "interval": 0, "timeout": 2, "min_interval": 1},
        {
            "version": 1,
            "interval": 1,
            "timeout": 2,
            "min_interval": 1,
            "max_frame_size": 0,
        },
    ],
)
def test_from_hello_rejects_malformed_answers(fields: dict[str, object]) -> None:
    with pytest.raises(HandshakeError):
        Negotiated.from_hello(fields)
