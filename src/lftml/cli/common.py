"""Conventions shared by every lftml command.

* ``--json`` prints exactly one JSON object on stdout (nothing else); human tables otherwise.
* ``--seed`` is an explicit integer; the seed used is recorded in every output file.
* ``--out`` files are written atomically or resumably, never left half-valid.
* Bad input raises :class:`lftml.errors.LftmlError`; :func:`lftml.cli.main.main` turns it into
  one line ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import typer

from lftml.errors import LftmlError

JSON_OPTION = typer.Option(False, "--json", help="Print one machine-readable JSON object instead of a table.")
SEED_OPTION = typer.Option(0, "--seed", help="Seed of every random stream (recorded in the output).")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, Paths and dataclasses to plain JSON types (NaN -> null)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, complex):
        return [obj.real, obj.imag]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(to_jsonable(obj), indent=2))


def fmt_err(value: float, error: float) -> str:
    """``value(error)`` in the particle-physics convention with two significant digits of the error."""
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{value:.6g}"
    digits = max(0, 1 - int(math.floor(math.log10(error))))
    scaled = round(error * 10**digits)
    if digits == 0:
        return f"{value:.0f}({scaled})"
    return f"{value:.{digits}f}({scaled})"


def require_file(path: Path, what: str = "file") -> Path:
    if not Path(path).exists():
        raise LftmlError(f"{what} {path} does not exist")
    if Path(path).is_dir():
        raise LftmlError(f"{what} {path} is a directory, expected a file")
    return Path(path)
