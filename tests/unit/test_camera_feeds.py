"""The simulator's feeds for a site: one stream per camera and per watchtower view, on the paths
of the site's URLs, with the scenes asked for; an unknown device or scene is an error."""

from __future__ import annotations

import pytest

from gridwatch.site import Site
from simulators.camera_feeds import feeds_for_site, parse_scenes


def test_every_stream_of_the_sample_site_on_its_url_path(site: Site) -> None:
    feeds = feeds_for_site(site, parse_scenes(["CAM-004=farm_fire", "WT-01:2=smoke"]))
    paths = {f.path: f for f in feeds}
    assert set(paths) == {
        *(c.url.rsplit("8554/", 1)[1] for c in site.cameras),
        *(u.rsplit("8554/", 1)[1] for t in site.watchtowers
          for u in (t.visible_url, t.thermal_url) if u),
    }  # fmt: skip
    assert paths["cam-004"].start == "farm_fire" and set(paths["cam-004"].clips) == {
        "quiet",
        "farm_fire",
    }
    assert paths["cam-001"].start == "quiet"
    tower = paths["wt-01/visible"]
    assert tower.ptz and tower.clips["2"].element == "smoke" and tower.clips["1"].element == "quiet"
    assert paths["wt-01/thermal"].clips["2"].element == "thermal_quiet"  # smoke alone: not hot


def test_unknown_devices_and_scenes_are_errors(site: Site) -> None:
    with pytest.raises(ValueError, match="CAM-999"):
        feeds_for_site(site, {"CAM-999": "fire"})
    with pytest.raises(ValueError, match="DEVICE=ELEMENT"):
        parse_scenes(["CAM-001=lava"])
