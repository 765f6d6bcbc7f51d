"""The systemd units, sysusers file and man pages: what `systemd-analyze` and `man` say of them.

`systemd-analyze verify` checks that ExecStart='s program exists and is executable, and that the
Documentation= man pages resolve. The units name /opt/timeos/bin (the install in README.md), so
these tests verify a copy pointing at this venv's bin/, with MANPATH at the man pages a wheel
installs. Tests that need systemd-analyze skip, saying so, where it is not installed; .ci/run
installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
MAN = ROOT / "man"
ANALYZE = shutil.which("systemd-analyze") or "systemd-analyze"
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def _unit(name: str) -> dict[str, list[str]]:
    """`Key=value` settings of a unit file, every value of a repeated key kept."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _installed_units(tmp_path: Path) -> Path:
    """Copies of the units with /opt/timeos/bin/ replaced by this venv's bin/ (which exists)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "timeosd").exists():
        pytest.skip(f"no timeosd script in {bin_dir}")
    out = tmp_path / "units"
    out.mkdir()
    for unit in ("timeosd.service", "timeosd.socket"):
        text = (UNITS / unit).read_text().replace("/opt/timeos/bin/", f"{bin_dir}/")
        (out / unit).write_text(text)
    return out


def _man_tree(tmp_path: Path) -> Path:
    """share/man laid out as the wheel installs it (section from each page's suffix)."""
    share = tmp_path / "share" / "man"
    for page in MAN.iterdir():
        section = share / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    return share


def test_the_service_is_type_notify_with_a_watchdog_and_a_reload_that_can_fail():
    unit = _unit("timeosd.service")
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] and unit["Restart"] == ["on-failure"]
    # The CLI exits 1 on a rejected reload; kill -HUP would report success regardless.
    assert unit["ExecReload"] == ["/opt/timeos/bin/timeos --socket /run/timeos/timeos.sock reload"]
    assert unit["ExecStart"][0].startswith("/opt/timeos/bin/timeosd ")


def test_the_service_runs_as_the_static_timeos_user_not_a_dynamic_one():
    unit = _unit("timeosd.service")
    assert "DynamicUser" not in unit
    assert unit["User"] == ["timeos"] and unit["Group"] == ["timeos"]
    # /run/timeos also holds the socket unit's socket: stopping the service must not remove it.
    assert unit["RuntimeDirectory"] == ["timeos"] and unit["RuntimeDirectoryPreserve"] == ["yes"]


def test_the_socket_unit_listens_where_the_cli_looks_for_group_timeos():
    unit = _unit("timeosd.socket")
    assert unit["ListenStream"] == ["/run/timeos/timeos.sock"]
    assert unit["SocketMode"] == ["0660"] and unit["SocketGroup"] == ["timeos"]
    assert unit["Service"] == ["timeosd.service"]
    exec_reload = _unit("timeosd.service")["ExecReload"][0]
    assert "--socket /run/timeos/timeos.sock" in exec_reload


def test_sysusers_creates_the_timeos_user_and_group(tmp_path):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (apt-get install systemd)")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [sysusers, f"--root={tmp_path}", str(UNITS / "timeos.sysusers")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("timeos:"))
    gid = next(line.split(":")[2] for line in group.splitlines() if line.startswith("timeos:"))
    assert user[3] == gid  # primary group: timeos
    assert int(user[2]) < 1000  # a system user
    assert user[5] == "/var/lib/timeos"


@needs_analyze
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    units = _installed_units(tmp_path)
    env = {**os.environ, "MANPATH": f"{_man_tree(tmp_path)}:"}
    result = subprocess.run(
        [ANALYZE, "verify", str(units / "timeosd.service"), str(units / "timeosd.socket")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@needs_analyze
def test_verify_would_catch_a_missing_man_page(tmp_path):
    # The check above is real: without the man pages, verify fails on Documentation=.
    units = _installed_units(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [ANALYZE, "verify", str(units / "timeosd.service")],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(empty)},
        timeout=120,
    )
    if shutil.which("man") is None:
        pytest.skip("no man(1): verify cannot check Documentation=")
    assert result.returncode != 0 and "man timeosd(8)" in result.stderr


@needs_analyze
def test_the_service_exposure_is_at_most_3(tmp_path):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(UNITS / "timeosd.service")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    found = re.search(r"Overall exposure level for timeosd\.service: ([\d.]+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.0, result.stdout


def test_the_wheel_installs_every_man_page_under_share_man():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shared = config["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    expected = {
        f"man/{page.name}": f"share/man/man{page.suffix[1:]}/{page.name}" for page in MAN.iterdir()
    }
    assert shared == expected
    # Every page the unit's Documentation= names is one of them.
    documented = re.findall(r"man:([\w-]+)\((\d)\)", (UNITS / "timeosd.service").read_text())
    assert {f"man/{name}.{section}" for name, section in documented} <= set(expected)


def test_a_built_wheel_carries_the_man_pages_where_man_finds_them(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("timeos-*.whl")
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as archive:
        data = [n for n in archive.namelist() if ".data/data/" in n]
        for name in data:  # what pip does with a wheel's data: <prefix>/<path>
            target = prefix / name.split(".data/data/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    assert sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*.[0-9]")) == [
        "share/man/man1/timeos.1",
        "share/man/man5/timeos-rules.5",
        "share/man/man8/timeosd.8",
    ]
    man = shutil.which("man")
    if man is None:
        return
    # man derives its search path from PATH: <prefix>/bin on PATH finds <prefix>/share/man.
    (prefix / "bin").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = f"{prefix / 'bin'}:{env.get('PATH', '')}"
    found = subprocess.run(
        [man, "-w", "timeosd(8)"], capture_output=True, text=True, env=env, timeout=60
    )
    assert found.stdout.strip() == str(prefix / "share/man/man8/timeosd.8"), found.stderr
