"""Request signing: the exact string signed (as docs/dispatch-api.yaml states it), the replay
window and its bounded nonce cache, and the keys refused at start-up."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.errors import ConfigError
from gridwatch.signing import (
    IDEMPOTENCY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Verifier,
    require_key,
    sign,
)
from gridwatch.xml_signature import make_throwaway

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32
T0 = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_the_signature_is_the_documented_hmac_over_method_path_time_nonce_key_and_body() -> None:
    body = b'{"case_id": "C1"}'
    headers = sign(
        KEY, "post", "http://desk:8701/v1/cases?x=1", body, idempotency_key="C1:2", now=T0
    )
    nonce = headers[NONCE_HEADER]
    text = f"v2\nPOST\n/v1/cases?x=1\n{int(T0)}\n{nonce}\nC1:2\n".encode() + body
    assert headers[SIGNATURE_HEADER] == "v2=" + hmac.new(KEY, text, hashlib.sha256).hexdigest()
    assert headers[TIMESTAMP_HEADER] == str(int(T0)) and headers[IDEMPOTENCY_HEADER] == "C1:2"
    doc = yaml.safe_load((ROOT / "docs" / "dispatch-api.yaml").read_text(encoding="utf-8"))
    described = doc["info"]["description"]
    assert "v2\\nPOST\\n/v1/cases\\n" in described and NONCE_HEADER in described


def test_every_part_of_the_request_is_covered() -> None:
    body = b'{"case_id": "C1"}'
    headers = sign(KEY, "POST", "/v1/cases", body, idempotency_key="C1:2", now=T0)
    other_key = {**headers, IDEMPOTENCY_HEADER: "C1:3"}
    cases = [
        ("GET", "/v1/cases", headers, body),
        ("POST", "/v1/cases/other", headers, body),
        ("POST", "/v1/cases", other_key, body),
        ("POST", "/v1/cases", headers, body + b" "),
    ]
    for method, path, sent, payload in cases:
        refusal = Verifier(KEY, clock=Clock()).verify(method, path, sent, payload)
        assert refusal is not None and refusal.status == 401, (method, path)
        assert refusal.reason == "signature does not match"
    assert Verifier(KEY, clock=Clock()).verify("POST", "/v1/cases", headers, body) is None


def test_a_replay_is_refused_within_the_window_and_stale_requests_after_it() -> None:
    clock = Clock()
    verifier = Verifier(KEY, clock=clock)
    headers = sign(KEY, "POST", "/cb", b"{}", now=T0)
    assert verifier.verify("POST", "/cb", headers, b"{}") is None
    clock.now += 299
    refusal = verifier.verify("POST", "/cb", headers, b"{}")
    assert refusal is not None and "replayed" in refusal.reason
    clock.now += 2
    refusal = verifier.verify("POST", "/cb", headers, b"{}")
    assert refusal is not None and "tolerance window" in refusal.reason
    assert (
        verifier.verify("POST", "/cb", sign(KEY, "POST", "/cb", b"{}", now=clock.now), b"{}")
        is None
    )


def test_the_nonce_cache_is_bounded_and_forgets_with_the_window() -> None:
    clock = Clock()
    verifier = Verifier(KEY, capacity=2, clock=clock)
    for _ in range(2):
        assert verifier.verify("POST", "/cb", sign(KEY, "POST", "/cb", b"", now=T0), b"") is None
    full = verifier.verify("POST", "/cb", sign(KEY, "POST", "/cb", b"", now=T0), b"")
    assert full is not None and full.status == 503  # refused, never a nonce forgotten early
    clock.now += 301  # the first two have left the window, and the cache
    fresh = sign(KEY, "POST", "/cb", b"", now=clock.now)
    assert verifier.verify("POST", "/cb", fresh, b"") is None
    assert len(verifier._seen) == 1


def _placeholders() -> list[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    values = re.findall(r"^[A-Z_]+=(change-me\S*)$", text, re.MULTILINE)
    assert len(values) >= 4  # every secret of .env.example
    return values


@pytest.mark.parametrize("value", _placeholders())
def test_every_placeholder_of_env_example_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="SINK_HMAC_KEY is a placeholder"):
        require_key("SINK_HMAC_KEY", value)
    with pytest.raises(ConfigError, match="placeholder"):
        require_key("SINK_HMAC_KEY", value + "-0123456789abcdef0123456789abcdef")


def test_short_and_missing_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="31 bytes, shorter than 32"):
        require_key("K", "x" * 31)
    with pytest.raises(ConfigError, match="K is not set"):
        require_key("K", "")
    assert require_key("K", "x" * 32) == b"x" * 32


def test_the_relay_refuses_to_start_with_a_placeholder_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = make_throwaway(tmp_path, "test")
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("GRIDWATCH_CAP_SIGNING_KEY", str(key))
    monkeypatch.setenv("GRIDWATCH_CAP_SIGNING_CERT", str(cert))
    monkeypatch.setenv("SINK_HMAC_KEY", "change-me-sink-key")
    result = CliRunner().invoke(app, ["alerts", "relay"])
    assert result.exit_code == 2
    assert "SINK_HMAC_KEY is a placeholder" in result.output
    monkeypatch.delenv("GRIDWATCH_CAP_SIGNING_KEY")
    monkeypatch.setenv("SINK_HMAC_KEY", "x" * 40)
    result = CliRunner().invoke(app, ["alerts", "relay"])
    assert result.exit_code == 2 and "GRIDWATCH_CAP_SIGNING_KEY" in result.output
