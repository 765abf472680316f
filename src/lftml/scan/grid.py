"""Scan files: a TOML grid of ``lftml hmc`` (or ``lftml langevin``) option sets -> points.

A scan file has up to four tables::

    [scan]     command = "hmc" (default) or "langevin"; threads = 1 (torch threads per point)
    [grid]     every entry is an axis: a list of values, or {start, stop, num} (inclusive, linspace)
    [fixed]    one value per key
    [cluster]  optional: where the points run (see :mod:`lftml.scan.executor`)

Keys of [grid] and [fixed] are the command's option names with underscores (``n_configs`` for
``--n-configs``, ``md_steps``, ``shape = [8, 8]``). The option set is read from the registered
command itself, so every option ``lftml hmc`` has (now or later) is a valid key, with the same
defaults. The points are the Cartesian product of the axes in file order; a point's seed is the
scan's seed (``[fixed] seed``) unless ``seed`` is an axis. Each point is one ensemble file named
by its grid values (``kappa=0.25_shape=8x8.h5``), so the name is stable across reruns.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lftml.errors import LftmlError

__all__ = ["ScanSpec", "Point", "load_scan", "parse_scan", "command_options", "RESERVED"]

COMMANDS = ("hmc", "langevin")
TABLES = ("scan", "grid", "fixed", "cluster")
SCAN_KEYS = ("command", "threads")
#: options the scan itself sets for every point (output file, resume, machine-readable output)
RESERVED = ("out", "resume", "as_json", "progress", "overwrite")
#: option name -> lower bound (inclusive unless marked) of values a point may have
_MINIMUM: dict[str, tuple[float, bool]] = {
    "lam": (0.0, True), "lam4": (0.0, True), "g": (0.0, True), "kappa": (0.0, True),
    "chains": (1, True), "n_configs": (1, True), "therm": (0, True), "every": (1, True),
    "md_steps": (1, True), "traj_length": (0.0, False), "dt": (0.0, False), "seed": (0, True),
    "checkpoint_every": (1, True), "step_jitter": (0.0, True),
}


@functools.lru_cache(maxsize=None)
def click_command(command: str = "hmc"):
    """The registered click command object of ``lftml COMMAND`` (what the shell runs; built once)."""
    import typer.main

    from lftml.cli.main import app

    if command not in COMMANDS:
        raise LftmlError(f"[scan] command = {command!r} is not supported; use one of {', '.join(COMMANDS)}")
    return typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]


def command_options(command: str = "hmc") -> dict[str, Any]:
    """The click options of ``lftml COMMAND`` by parameter name (``n_configs``, ``md_steps``, ...)."""
    return {p.name: p for p in click_command(command).params if p.name is not None}


def _format_value(value: Any) -> str:
    """A grid value as it appears in a file name: 0.25, 8x8, omelyan, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "x".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def _expand_axis(key: str, spec: Any) -> tuple[Any, ...]:
    """A [grid] entry -> its values: a non-empty list, or ``{start, stop, num}`` (inclusive)."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"start", "stop", "num"}
        if unknown or not {"start", "stop", "num"} <= set(spec):
            raise LftmlError(f"[grid] {key}: a range is {{start = A, stop = B, num = N}} (inclusive); got keys {sorted(spec)}")
        start, stop, num = spec["start"], spec["stop"], spec["num"]
        if not isinstance(num, int) or num < 1:
            raise LftmlError(f"[grid] {key}: num must be a positive integer, got {num!r}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (start, stop)):
            raise LftmlError(f"[grid] {key}: start and stop must be numbers")
        if num == 1:
            return (float(start),)
        # 12 significant digits: 0.27 + 2 * 0.005 is 0.28, not 0.28000000000000003, in names and files
        return tuple(float(f"{start + (stop - start) * i / (num - 1):.12g}") for i in range(num))
    if not isinstance(spec, list) or not spec:
        raise LftmlError(f"[grid] {key} must be a non-empty list of values (an axis) or {{start, stop, num}}; got {spec!r}")
    return tuple(tuple(v) if isinstance(v, list) else v for v in spec)


@dataclass(frozen=True)
class Point:
    """One grid point: its name (the file stem), its grid values and its full option set."""

    name: str
    parameters: Mapping[str, Any]
    options: Mapping[str, Any]

    @property
    def filename(self) -> str:
        return f"{self.name}.h5"


@dataclass(frozen=True)
class ScanSpec:
    """A parsed scan file. ``grid`` keeps the file's axis order; ``fixed`` the given constants."""

    command: str = "hmc"
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    cluster: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 1
    source: str | None = None

    def points(self) -> list[Point]:
        """The Cartesian product of the axes (last axis fastest), each with its merged options."""
        keys = [k for k, _ in self.grid]
        out = []
        for values in itertools.product(*(v for _, v in self.grid)):
            params = dict(zip(keys, values))
            name = "_".join(f"{k}={_format_value(v)}" for k, v in params.items()) or "point"
            out.append(Point(name=name, parameters=params, options={**self.fixed, **params}))
        names = [p.name for p in out]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise LftmlError(f"[grid] gives two points the same name {dup!r}: an axis repeats a value")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (what ``scan.toml``/``scan.json`` in the output folder hold)."""
        out: dict[str, Any] = {"scan": {"command": self.command, "threads": self.threads}}
        out["grid"] = {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in self.grid}
        out["fixed"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed.items()}
        if self.cluster:
            out["cluster"] = dict(self.cluster)
        return out


def parse_scan(data: Mapping[str, Any], source: str | None = None) -> ScanSpec:
    """Validate the tables and keys of a scan file (values are checked per point, see
    :func:`lftml.scan.tasks.prepare_point`). Unknown tables or keys: one line naming them."""
    where = f" in {source}" if source else ""
    for table in data:
        if table not in TABLES:
            raise LftmlError(f"unknown table [{table}]{where}; a scan file has [grid], [fixed], [scan] and [cluster]")
        if not isinstance(data[table], Mapping):
            raise LftmlError(f"{table} must be a table ([{table}]){where}")
    scan = dict(data.get("scan", {}))
    for key in scan:
        if key not in SCAN_KEYS:
            raise LftmlError(f"unknown key [scan] {key}{where}; known: {', '.join(SCAN_KEYS)}")
    command = scan.get("command", "hmc")
    threads = scan.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise LftmlError(f"[scan] threads must be a positive integer, got {threads!r}")
    options = command_options(command)
    grid_in, fixed_in = dict(data.get("grid", {})), dict(data.get("fixed", {}))
    for table, entries in (("grid", grid_in), ("fixed", fixed_in)):
        for key in entries:
            if key in RESERVED or key not in options:
                hint = " (the scan sets it for every point)" if key in RESERVED else ""
                known = ", ".join(k for k in options if k not in RESERVED)
                raise LftmlError(f"unknown key [{table}] {key}{where}{hint}; `lftml {command}` options are: {known}")
    both = set(grid_in) & set(fixed_in)
    if both:
        raise LftmlError(f"key {sorted(both)[0]} is in both [grid] and [fixed]{where}; keep one")
    grid = tuple((k, _expand_axis(k, v)) for k, v in grid_in.items())
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in fixed_in.items()}
    return ScanSpec(command=command, grid=grid, fixed=fixed, cluster=dict(data.get("cluster", {})), threads=threads,
                    source=source)


def load_scan(path: str | Path) -> ScanSpec:
    """Read and validate a scan TOML file."""
    p = Path(path)
    if not p.is_file():
        raise LftmlError(f"scan file {p} does not exist" if not p.exists() else f"scan file {p} is not a file")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LftmlError(f"{p} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LftmlError(f"cannot read {p}: {exc}") from None
    return parse_scan(data, source=str(p))


def check_minimum(name: str, key: str, value: Any) -> None:
    """One-line error for a value below its documented range (negative L is checked by the shape parser)."""
    if key not in _MINIMUM or value is None or isinstance(value, bool):
        return
    lo, inclusive = _MINIMUM[key]
    if not isinstance(value, (int, float)) or math.isnan(value):
        return
    if value < lo or (not inclusive and value == lo):
        rel = ">=" if inclusive else ">"
        raise LftmlError(f"point {name}: {key} = {value!r} is out of range; it must be {rel} {lo:g}")
