"""The Allen API's JSON envelope, as every ``query.json``-style route answers."""

from __future__ import annotations

from typing import Any


def success(rows: list[Any], start_row: int = 0, total_rows: int | None = None) -> dict[str, Any]:
    """``rows`` as one page of ``total_rows`` (all of them, by default)."""
    total = len(rows) if total_rows is None else total_rows
    return {
        "success": True,
        "id": 0,
        "start_row": start_row,
        "num_rows": len(rows),
        "total_rows": total,
        "msg": rows,
    }


def failure(message: str) -> dict[str, Any]:
    """The API saying no: ``success: false`` with a message in ``msg``."""
    return {
        "success": False,
        "id": -1,
        "start_row": 0,
        "num_rows": 0,
        "total_rows": 0,
        "msg": message,
    }
