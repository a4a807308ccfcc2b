"""The MQTT URL, login and TLS settings: each one takes effect or is refused, never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridwatch.errors import ConfigError
from gridwatch.mqtt_access import MqttAccess, parse_mqtt_url
from gridwatch.settings import Settings

SECRET = "s3cret-for-tests"  # noqa: S105 - made up


def access(url: str, **settings: object) -> MqttAccess:
    return MqttAccess.from_settings(Settings(_env_file=None, mqtt_url=url, **settings))


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker", "broker", 1883, False),
        ("tcp://broker:1884", "broker", 1884, False),
        ("mqtts://broker", "broker", 8883, True),
        ("ssl://u@broker:9883", "broker", 9883, True),
    ],
)
def test_the_url_gives_host_port_and_tls(url: str, host: str, port: int, tls: bool) -> None:
    parsed = parse_mqtt_url(url)
    assert (parsed.host, parsed.port, parsed.tls) == (host, port, tls)


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://broker:port"])
def test_a_url_that_is_not_mqtt_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="GRIDWATCH_MQTT_URL"):
        parse_mqtt_url(url)


def test_a_password_in_the_url_is_honoured_and_decoded() -> None:
    found = access("mqtts://bridge:p%40ss%3Aword@broker")
    assert (found.username, found.password, found.tls) == ("bridge", "p@ss:word", True)
    assert "p@ss" not in repr(found)


def test_the_password_setting_joins_a_user_of_the_url() -> None:
    assert access("mqtt://bridge@broker", mqtt_password=SECRET).password == SECRET
    assert access(f"mqtt://bridge:{SECRET}@broker", mqtt_password=SECRET).password == SECRET


def test_two_different_passwords_are_refused() -> None:
    with pytest.raises(ConfigError, match="differs from GRIDWATCH_MQTT_PASSWORD"):
        access("mqtt://bridge:other@broker", mqtt_password=SECRET)


def test_a_password_without_a_user_is_refused() -> None:
    with pytest.raises(ConfigError, match="names no user"):
        access("mqtt://broker", mqtt_password=SECRET)


def test_certificates_on_a_plain_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GRIDWATCH_MQTT_CA need TLS"):
        access("mqtt://broker", mqtt_ca=tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="GRIDWATCH_MQTT_KEY is set without"):
        access("mqtts://broker", mqtt_key=tmp_path / "key.pem")


def test_a_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MQTT TLS files"):
        access("mqtts://broker", mqtt_ca=tmp_path / "missing.pem").tls_context()
