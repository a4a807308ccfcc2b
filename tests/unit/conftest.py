"""What the unit tests share: the bundled sample site and its grid index, loaded once."""

import pytest

from gridwatch.geo import GridIndex
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import Site, load_site


@pytest.fixture(scope="session")
def site() -> Site:
    return load_site(SAMPLE_SITE)


@pytest.fixture(scope="session")
def index(site: Site) -> GridIndex:
    return GridIndex(site)
