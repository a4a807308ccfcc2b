from pathlib import Path

import pytest

from gridwatch.site import Site, load_site

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_site() -> Site:
    return load_site(FIXTURES / "tiny_site.yaml")
