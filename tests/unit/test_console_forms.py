"""What the console makes of its forms and of failed logins, without a server."""

from __future__ import annotations

import pytest

from alerts.console.pages import parse_matchers
from alerts.console.ratelimit import FailureLimit


def test_silence_matchers_are_label_value_lines_of_known_labels() -> None:
    text = " grid_code = 52019900300101 \n\nkind=flood\n"
    assert parse_matchers(text) == {"grid_code": "52019900300101", "kind": "flood"}
    with pytest.raises(ValueError, match="not a label"):
        parse_matchers("colour=red")  # would silence nothing: the label is `level`
    with pytest.raises(ValueError, match="expected label=value"):
        parse_matchers("kind")
    with pytest.raises(ValueError, match="at least one matcher"):
        parse_matchers("  \n")


def test_failed_logins_wait_per_key_and_the_window_slides() -> None:
    now = [0.0]
    limit = FailureLimit(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limit.retry_after("name:a", "addr:1") == 0
        limit.failed("name:a", "addr:1")
        now[0] += 10
    assert limit.retry_after("name:a", "addr:2") == pytest.approx(30)  # first failure at 0
    assert limit.retry_after("name:b", "addr:1") == pytest.approx(30)
    assert limit.retry_after("name:b", "addr:2") == 0
    now[0] = 61
    assert limit.retry_after("name:a", "addr:1") == 0  # the first failure left the window
    limit.succeeded("name:a")
    limit.failed("addr:1")
    assert limit.retry_after("name:a") == 0 and limit.retry_after("addr:1") > 0
