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
