"""The demo's verdict on a run: a missed event, a false incident or a wrong colour fails it."""

from gridwatch.cli.demo_summary import DemoSummary
from gridwatch.events import IncidentKind, Level
from gridwatch.scenario import load_scenario, place_point
from gridwatch.scenario_score import RunIncident, score
from gridwatch.site import Site


def _found(site: Site, names: dict[str, Level]) -> list[RunIncident]:
    spec = load_scenario()
    found = []
    for event in spec.events:
        if event.name in names:
            where = place_point(site, event.place)
            found.append(
                RunIncident(
                    kind=event.expect.incident,
                    level=names[event.name],
                    lon=where.lon,
                    lat=where.lat,
                    sources=event.expect.sources,
                )
            )
    return found


def _verdict(site: Site, incidents: list[RunIncident], died: tuple[str, ...] = ()) -> list[str]:
    result = score(load_scenario(), site, incidents)
    return DemoSummary.model_construct(
        complete=True, lost_readings=0, camera_workers_died=list(died), score=result
    ).failures


EXPECTED = {e.name: e.expect.level for e in load_scenario().events}


def test_a_run_finding_every_event_and_nothing_else_passes(site: Site) -> None:
    assert _verdict(site, _found(site, EXPECTED)) == []


def test_a_run_whose_camera_worker_died_fails(site: Site) -> None:
    died = "RuntimeError('decoder gone')"
    assert _verdict(site, _found(site, EXPECTED), (died,)) == [f"a camera worker died: {died}"]


def test_a_missed_event_and_a_false_incident_fail_the_run(site: Site) -> None:
    found = _found(site, {"flood rise": Level.RED, "forest fire": Level.RED})
    stray = RunIncident(kind=IncidentKind.TRAFFIC_SAFETY, level=Level.YELLOW, lon=0.0, lat=0.0)
    assert _verdict(site, [*found, stray]) == [
        f"{len(EXPECTED) - len(found)} scenario events were missed",
        "1 false incidents were opened",
    ]


def test_an_event_below_its_colour_fails_the_run(site: Site) -> None:
    levels = EXPECTED | {"flood rise": Level.ORANGE}
    assert _verdict(site, _found(site, levels)) == [
        "not at the expected colour or sources: flood rise"
    ]
