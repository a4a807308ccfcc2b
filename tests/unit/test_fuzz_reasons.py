"""The fuzz benchmark groups dead-letter reasons by kind: the particulars (names, numbers) and
the other shapes pydantic tried are taken out, so one rule broken many times is one line."""

from benchmarks.fuzz import reason_kind


def test_reasons_that_differ_only_in_particulars_are_one_kind() -> None:
    assert reason_kind("unknown device 'ZZ-00012'") == reason_kind('unknown device "ZZ-1"')
    assert reason_kind("RG-002.rainfall_mm_h=-1.5 outside plausible range [0.0, 300.0]") == (
        "RG-N.rainfall_mm_h=N outside plausible range [N, N]"
    )
    assert reason_kind(
        "TelemetryPoint.ts.int: Input should be a valid integer; list[TelemetryPoint]: Input "
        "should be a valid array"
    ) == ("TelemetryPoint.ts.int: Input should be a valid integer")
    assert reason_kind("unknown device 'A'") != reason_kind("device 'A' does not report 'b'")
    assert len(reason_kind("x" * 500)) == 90
