"""What the results were measured on: the machine, the interpreter, the versions, the commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_PACKAGES = ("asyncdl", "aiohttp", "numpy", "orjson", "pynrrd")


def describe(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """The machine and software; ``env`` and ``cwd`` are the contenders', to see what they import."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average_at_start": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "commit": _git("rev-parse", "--short", "HEAD"),
        "asyncdl_modified": bool(_git("status", "--porcelain", "--", "asyncdl")),
        # What the contenders import (set PYTHONPATH to benchmark another copy).
        "asyncdl_source": _asyncdl_source(env, cwd),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, as the results record them (at the start and end)."""
    return [round(x, 2) for x in os.getloadavg()]


def child_env() -> dict[str, str]:
    """The environment of every child: this one, with the repository importable (for contenders)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO)])
    return env


def _asyncdl_source(env: dict[str, str], cwd: Path) -> str:
    """The folder of the asyncdl package a contender imports, asked of a child like theirs."""
    code = "import os, asyncdl; print(os.path.dirname(asyncdl.__file__))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()
