"""Shared test set-up: results must not depend on the host's zone or tz database."""

from __future__ import annotations

import os
import sys
import time
import zoneinfo
from pathlib import Path

# Pin the tz database to the tzdata package (PYTHONTZPATH= empty) and give the host an odd zone,
# so nothing silently depends on the machine.
os.environ["PYTHONTZPATH"] = ""
os.environ["TZ"] = "Asia/Kolkata"
time.tzset()
zoneinfo.reset_tzpath(to=[])

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402
from stores import backend_fixture  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Run the test on each store backend (stores.py); PostgreSQL skips without a server."""
    yield from backend_fixture(request)
