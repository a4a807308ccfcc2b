"""The demo's watched site: only the presets its camera events need, the construction tower on
the scenario's compressed days and without a thermal stream it has no fire for."""

from __future__ import annotations

from gridwatch.cli.demo_cameras import clocked_scenes, compressed_days, demo_cues, watched_site
from gridwatch.scenario import load_scenario
from gridwatch.site import Site


def test_the_construction_tower_patrols_its_watched_preset_on_the_scenario_s_days(
    site: Site,
) -> None:
    spec = load_scenario().stretched(12.0)
    (building,) = spec.constructions
    watched = watched_site(site, demo_cues(site, spec), spec)
    towers = {t.id: t for t in watched.watchtowers}
    assert sorted(towers) == ["WT-01", "WT-02", "WT-03"]
    rooftop = towers["WT-03"]
    assert [p.id for p in rooftop.presets] == [building.preset]
    watch = rooftop.vision.detectors.construction_change
    assert watch is not None and watch.day_s == building.day_s == 1.5
    assert rooftop.thermal_url is None  # no fire cued at the rooftop: only its visible worker
    assert rooftop.settle_s + rooftop.dwell_s <= building.day_s  # a visit a compressed day
    assert compressed_days(watched) == {"WT-03": 1.5}
    # The forest towers keep their streams and their own days.
    for tower in (towers["WT-01"], towers["WT-02"]):
        assert tower.thermal_url is not None and len(tower.presets) == 1
    assert compressed_days(site) == {}
    assert clocked_scenes(spec) == {"CAM-006": "road_obstruction", "WT-03:1": "construction"}
