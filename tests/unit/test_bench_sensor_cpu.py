"""The in-process CPU bench puts the sensor bench's load through every role's code: the bridge
makes the records, the rules judge every reading of them, the writer decodes them all."""

from benchmarks.sensor_cpu import run
from gridwatch.site import Site


def test_every_role_takes_every_point_and_the_figures_are_printed(tiny_site: Site) -> None:
    result = run(tiny_site, devices=150, steps=12, metrics=4, repeat=1)
    assert result.data_points == 150 * 12 * 4
    assert result.records == 2 * 12  # two gateway messages a period, one partition
    assert result.dead_letters == 0
    # Every 50th device crosses the yellow threshold and back once per ten reports, each in its
    # own phase: in twelve reports device 0 twice, devices 50 and 100 once; up and down each.
    assert result.detections == 2 * (2 + 1 + 1)
    for figure in ("bridge", "rules", "writer_decode", "writer_rows"):
        assert getattr(result, f"{figure}_us_per_point") > 0
