"""The package looks after itself: one version, its license, and floors that CI really installs
(tests/test_readme.py checks that CI runs the README's test command)."""

import re
import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

import asyncdl

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirements():
    """Every requirement users can get: the dependencies and the extras (but ``all``)."""
    extras = PROJECT["optional-dependencies"]
    listed = PROJECT["dependencies"] + [
        r for name, rs in extras.items() if name != "all" for r in rs
    ]
    return [Requirement(r) for r in listed]


def test_one_version_read_from_the_metadata():
    assert asyncdl.__version__ == version("asyncdl") == PROJECT["version"] == "0.2.0"
    assert "version" not in PROJECT.get("dynamic", [])
    changelog = (ROOT / "CHANGELOG.md").read_text()
    [first] = re.findall(r"^## \[(\d[^\]]*)\]", changelog, re.M)[:1]
    assert first == asyncdl.__version__
    assert not re.search(r"^version:", (ROOT / "CITATION.cff").read_text(), re.M)  # not a copy


def test_license_is_apache_2_in_spdx_form():
    assert PROJECT["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert metadata("asyncdl")["License-Expression"] == "Apache-2.0"
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # PEP 639
    assert re.search(r"^license: Apache-2.0$", (ROOT / "CITATION.cff").read_text(), re.M)


def test_users_see_no_development_tools_and_no_exact_pins():
    shipped = [Requirement(r) for r in metadata("asyncdl").get_all("Requires-Dist") or []]
    assert shipped
    assert not {r.name for r in shipped} & {"ruff", "mypy", "pytest", "hypothesis"}
    assert not [r for r in shipped if any(s.operator == "==" for s in r.specifier)]
    assert "test" not in PROJECT["optional-dependencies"]
    groups = PYPROJECT["dependency-groups"]
    assert {"ruff", "mypy"} <= {Requirement(r).name for r in groups["lint"]}


def test_uvloop_only_where_it_builds():
    [uvloop] = [r for r in requirements() if r.name == "uvloop"]
    assert uvloop.marker is not None
    assert not uvloop.marker.evaluate({"sys_platform": "win32"})
    assert not uvloop.marker.evaluate({"platform_python_implementation": "PyPy"})
    assert uvloop.marker.evaluate(
        {"sys_platform": "linux", "platform_python_implementation": "CPython"}
    )


def test_the_oldest_run_installs_exactly_the_floors():
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, pinned = line.split("==")
            pins[name.strip()] = Version(pinned)
    for req in requirements():
        [floor] = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert pins.pop(req.name) == floor, req
    # Not floors: AllenSDK beside asyncdl, and the pyparsing of the matplotlib floor's time.
    assert pins.keys() == {"allensdk", "pyparsing"}
