"""The files a scan keeps in its output folder besides the ensembles.

* ``index.json``: every point ever run into the folder, with its grid values, full option set,
  file name and status (``pending``, ``partial``, ``done``, ``failed``, ``interrupted``). Written
  atomically by the scan's driver only (never by workers); the ensembles themselves are the truth
  for "done" (a rerun reads their ``n_configs``), the index is the map.
* ``index.json.lock``: held (:class:`lftml.safeio.OutputLock`) while a scan runs, so two scans
  never write one folder.
* ``scan.toml`` / ``scan.json``: the resolved configuration of the last scan (defaults filled in),
  for diffing and committing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from lftml.errors import FileFormatError, LftmlError
from lftml.safeio import atomic_output

__all__ = ["INDEX", "read_index", "write_index", "write_config", "to_toml"]

INDEX = "index.json"
FORMAT = "lftml-scan-index"


def read_index(directory: str | Path) -> dict[str, Any]:
    """The folder's index (an empty one when there is none)."""
    path = Path(directory) / INDEX
    if not path.exists():
        return {"format": FORMAT, "format_version": 1, "points": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path} is not a readable scan index ({exc}); move it away to rebuild it") from None
    if data.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not an lftml scan index")
    return data


def write_index(directory: str | Path, index: Mapping[str, Any]) -> None:
    path = Path(directory) / INDEX
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(index, indent=1, sort_keys=False) + "\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is a JSON string for our keys and values
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        raise LftmlError("TOML has no null")
    raise LftmlError(f"cannot write {type(v).__name__} as TOML")


def to_toml(data: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Tables of scalars/lists as TOML (None values are left out: TOML has no null)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for table, entries in data.items():
        lines.append(f"\n[{table}]")
        for key, value in entries.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def write_config(directory: str | Path, config: Mapping[str, Any]) -> None:
    """``scan.toml`` and ``scan.json`` (the same content) in ``directory``, atomically."""
    directory = Path(directory)
    with atomic_output(directory / "scan.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")
    tables = {k: v for k, v in config.items() if isinstance(v, Mapping)}
    with atomic_output(directory / "scan.toml") as tmp:
        tmp.write_text(to_toml(tables, header="resolved scan configuration written by lftml scan (defaults filled in)"))
