from __future__ import annotations

import pytest

from common.config import ConfigError
from common.rpc.channels import channel_target
from gateway.config import GatewayConfig


def test_one_address_or_uri_is_taken_as_it_is() -> None:
    assert channel_target("asr:50054") == "asr:50054"
    assert channel_target("dns:///asr.internal:50054") == "dns:///asr.internal:50054"


def test_replica_lists_become_literal_address_lists() -> None:
    assert channel_target("localhost:1, 127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize(
    ("targets", "reason"),
    [("asr-1:1,asr-2:2", "not an IP address"), ("127.0.0.1:1,[::1]:2", "mixes"), ("a,b", "not host:port")],
)
def test_lists_grpc_cannot_use_are_refused(targets: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        channel_target(targets)


def test_the_gateway_refuses_a_bad_target_list_at_start() -> None:
    with pytest.raises(ConfigError, match=r"SUBTITLER_ASR_TARGET.*dns:///"):
        GatewayConfig.from_env({"SUBTITLER_ASR_TARGET": "asr-1:50054,asr-2:50054"})
