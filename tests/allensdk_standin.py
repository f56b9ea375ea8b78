"""AllenSDK's experiment table without AllenSDK (not installed here): what
``MouseConnectivityCache.get_experiments`` returns, built the way AllenSDK builds it.

Mirrors AllenInstitute/AllenSDK ``allensdk/core/mouse_connectivity_cache.py``
(``MouseConnectivityCache.__init__`` and ``get_experiments``, same signatures): the cached rows
(``experiments.json``, raw ``ApiConnectivity`` rows) call the id ``data_set_id``; ``get_experiments``
renames it ``id``, keeps the transgenic line's name, splits ``injection_structures`` ("a/b") into
ints, drops ``storage_directory`` and, with ``dataframe=True``, returns a DataFrame indexed by id
that keeps the id column. Filtering (``cre``, ``injection_structure_ids``) is AllenSDK's business
and not imitated: the calls are recorded instead. ``install`` puts it in sys.modules.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pandas as pd

#: The raw rows the stand-in cache holds; ``install`` sets them.
ROWS: list[dict[str, Any]] = []
#: The keyword arguments of every ``get_experiments`` call.
CALLS: list[dict[str, Any]] = []


def raw_rows(ids: list[int]) -> list[dict[str, Any]]:
    """Rows shaped like the fixture of AllenSDK's own tests
    (allensdk/test/core/test_mouse_connectivity_cache.py), with a name that needs CSV quoting."""
    return [
        {
            "data_set_id": data_set,
            "name": f'experiment {n}, "quoted"',
            "storage_directory": f"/external/{data_set}/",
            "transgenic_line": {"name": "Rbp4-Cre_KL100"} if n % 2 else None,
            "injection_structures": "385/593",
            "structure_id": 385,
            "structure_abbrev": "VISp",
            "injection_volume": 0.25 + n,
            "injection_x": 9000 + n,
        }
        for n, data_set in enumerate(ids)
    ]


def experiments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``get_experiments``' records: AllenSDK's renaming and parsing of the cached rows."""
    records = []
    for row in rows:
        record = dict(row, id=row["data_set_id"])
        del record["data_set_id"], record["storage_directory"]
        line = record["transgenic_line"]
        record["transgenic_line"] = line["name"] if line else None
        record["injection_structures"] = [int(s) for s in row["injection_structures"].split("/")]
        record["primary_injection_structure"] = record["structure_id"]
        records.append(record)
    return records


def to_dataframe(records: list[dict[str, Any]]) -> pd.DataFrame:
    """``get_experiments(dataframe=True)``: indexed by id, the id column kept."""
    return pd.DataFrame(records).set_index(["id"], drop=False)


class MouseConnectivityCache:
    def __init__(self, resolution: Any = None, cache: bool = True, manifest_file: Any = None,
                 ccf_version: Any = None, base_uri: Any = None, version: Any = None) -> None:  # fmt: skip
        self.manifest_file = manifest_file

    def get_experiments(self, dataframe: bool = False, file_name: Any = None, cre: Any = None,
                        injection_structure_ids: Any = None) -> Any:  # fmt: skip
        CALLS.append(
            {"dataframe": dataframe, "cre": cre, "injection_structure_ids": injection_structure_ids}
        )
        records = experiments(ROWS)
        return to_dataframe(records) if dataframe else records


def install(monkeypatch: Any, ids: list[int]) -> None:
    """Make ``from allensdk.core.mouse_connectivity_cache import MouseConnectivityCache`` work."""
    names = ["allensdk", "allensdk.core", "allensdk.core.mouse_connectivity_cache"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].MouseConnectivityCache = MouseConnectivityCache  # type: ignore[attr-defined]
    ROWS[:] = raw_rows(ids)
    CALLS.clear()
