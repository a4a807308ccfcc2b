"""How a gridwatch client reaches the MQTT broker: address, login and TLS (DESIGN.md §9).

``GRIDWATCH_MQTT_URL`` is ``mqtt://[user[:password]@]host[:1883]`` or, over TLS,
``mqtts://…[:8883]``. The password may sit in the URL (percent-encoded) or in
``GRIDWATCH_MQTT_PASSWORD``; when both are set they must agree. Over TLS the broker's certificate
is checked against ``GRIDWATCH_MQTT_CA`` (or the system's CAs) and its host name, and
``GRIDWATCH_MQTT_CERT``/``GRIDWATCH_MQTT_KEY`` give a client certificate to brokers that require
one. A setting that cannot take effect (a password without a user, certificates on a plain
``mqtt://`` URL) is an error, never ignored.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from gridwatch.errors import ConfigError, ServiceError
from gridwatch.settings import Settings

# Scheme -> (TLS, default port).
_SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_mqtt_url(url: str) -> MqttUrl:
    """``mqtt[s]://[user[:pass]@]host[:port]``."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(f"GRIDWATCH_MQTT_URL {url!r} is not mqtt://host:port or mqtts://…")
    tls, default_port = _SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError as err:
        raise ConfigError(f"GRIDWATCH_MQTT_URL {url!r}: {err}") from err
    return MqttUrl(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class MqttAccess:
    """What a client needs besides host and port: its login and, over TLS, the certificates."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttAccess:
        if settings.mqtt_url is None:
            return cls()
        url = parse_mqtt_url(settings.mqtt_url)
        password = url.password
        if settings.mqtt_password is not None:
            configured = settings.mqtt_password.get_secret_value()
            if password is not None and password != configured:
                raise ConfigError(
                    "GRIDWATCH_MQTT_URL carries a password that differs from"
                    " GRIDWATCH_MQTT_PASSWORD: set it in one place"
                )
            password = configured
        if password is not None and url.username is None:
            raise ConfigError("an MQTT password is set but GRIDWATCH_MQTT_URL names no user")
        files = {"CA": settings.mqtt_ca, "CERT": settings.mqtt_cert, "KEY": settings.mqtt_key}
        if not url.tls and any(files.values()):
            named = ", ".join(f"GRIDWATCH_MQTT_{k}" for k, v in files.items() if v)
            raise ConfigError(f"{named} need TLS: GRIDWATCH_MQTT_URL must be mqtts://")
        if settings.mqtt_key is not None and settings.mqtt_cert is None:
            raise ConfigError("GRIDWATCH_MQTT_KEY is set without GRIDWATCH_MQTT_CERT")
        return cls(
            username=url.username,
            password=password,
            tls=url.tls,
            ca=settings.mqtt_ca,
            cert=settings.mqtt_cert,
            key=settings.mqtt_key,
        )

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name checked, TLS 1.2 or later."""
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"MQTT TLS files (CA {self.ca}, cert {self.cert}): {err}") from err
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def apply(self, client: mqtt.Client) -> None:
        """Set the login and TLS on a client before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set_context(self.tls_context())


def connect_subscribed(
    client: mqtt.Client,
    host: str,
    port: int,
    subscribed: threading.Event,
    timeout: float,
    on_failure: Callable[[], object],
) -> None:
    """Connect, start the network loop and wait until the subscriptions are acknowledged
    (``subscribed``, set by the client's on_subscribe); ``on_failure`` undoes the loop."""
    try:
        client.connect(host, port, keepalive=30)
    except OSError as err:
        raise ServiceError(f"MQTT broker {host}:{port}: {err}") from err
    client.loop_start()
    if not subscribed.wait(timeout):
        on_failure()
        raise ServiceError(f"MQTT broker {host}:{port}: no SUBACK in {timeout}s")
