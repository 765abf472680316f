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
import re
from pathlib import Path
from typing import Any

import numpy as np
import typer

from lftml.errors import LftmlError

try:  # recent typer vendors click as typer._click; older ones use click itself
    from typer._click.core import ParameterSource
    from typer._click.exceptions import UsageError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - depends on the typer release
    from click import get_current_context
    from click.core import ParameterSource
    from click.exceptions import UsageError

__all__ = [
    "JSON_OPTION", "PROGRESS_OPTION", "SEED_OPTION", "MULTI_VALUE_OPTIONS", "ParameterSource", "UsageError",
    "check_typed_output", "emit_json", "fmt_err", "show_progress",
    "given_on_command_line",
    "get_current_context", "normalize_argv", "parse_shape", "require_file", "to_jsonable",
]


JSON_OPTION = typer.Option(False, "--json", help="Print one machine-readable JSON object instead of a table.")
PROGRESS_OPTION = typer.Option(None, "--progress/--no-progress",
                               help="Progress bar (default: on when stderr is a terminal, off otherwise).")


def show_progress(flag: bool | None, as_json: bool = False) -> bool:
    """``--progress/--no-progress``: as given, else on when stderr is a terminal (never with --json),
    the one rule of docs/cli.md for every command."""
    import sys

    if flag is None:
        return (not as_json) and sys.stderr.isatty()
    return bool(flag)


SEED_OPTION = typer.Option(0, "--seed", help="Seed of every random stream (recorded in the output).")


SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed and numpy accept seeds in [0, 2**63)


def check_seed(seed: int) -> int:
    """Refuse a seed no generator accepts (negative, or >= 2**63) with a one-line error."""
    if not 0 <= seed <= SEED_MAX:
        raise LftmlError(f"--seed must be an integer in [0, 2**63), got {seed}")
    return seed


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


def deprecated_option(old: str, new: str) -> None:
    """The one deprecation line for an old option spelling (docs/cli.md): kept one release."""
    typer.echo(f"warning: {old} is deprecated; use {new}", err=True)


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(to_jsonable(obj), indent=2))


def fmt_err(value: float, error: float | None) -> str:
    """``value(error)`` with two significant digits of the error (see :func:`lftml.stats.format_value_error`)."""
    from lftml.stats import format_value_error

    if error is None:
        return f"{value:.6g}"
    return format_value_error(value, error)


#: Options that take a variable number of values (``--shape 32 32``). Click options take a fixed
#: number, so the top-level group joins such values into one comma-separated token first.
MULTI_VALUE_OPTIONS = ("--shape",)


def normalize_argv(args: list[str]) -> list[str]:
    """``[..., "--shape", "32", "32", ...]`` -> ``[..., "--shape", "32,32", ...]``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        out.append(tok)
        i += 1
        if tok in MULTI_VALUE_OPTIONS:
            vals = []
            # every token up to the next option belongs to --shape (a number-like one such as 8.5, 1e3
            # or -4 too), so parse_shape names --shape and the bad value (`--shape x 8`) instead of
            # click reporting a stray argument. No command with --shape takes positional arguments.
            while i < len(args) and (not args[i].startswith("-")
                                     or re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?(,[^,]+)*", args[i])):
                vals.append(args[i])
                i += 1
            if vals:
                out.append(",".join(vals))
    return out


def parse_shape(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Parse ``"32,32"``, ``"32 32"`` or ``"32x32"`` into a tuple of positive ints."""
    if isinstance(text, (list, tuple)):
        parts = [str(t) for t in text]
    else:
        parts = re.split(r"[,x\s]+", str(text).strip())  # an empty part (`x,8`, `8,`) is an error, not dropped
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise LftmlError(f"--shape must be positive integers, e.g. --shape 32 32; got {text!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise LftmlError(f"--shape must be positive integers, e.g. --shape 32 32; got {text!r}")
    return shape


def being_written(path: str | Path, what: str = "file") -> LftmlError | None:
    """The one-line error for an input that does not exist yet because a live lftml run is writing
    it (its ``PATH.lock`` is held; one-shot writers rename the file into place at the end)."""
    from lftml.safeio import lock_holder

    holder = lock_holder(path)
    if holder is None:
        return None
    return LftmlError(f"{what} {path} is being written by another lftml process ({holder}); it appears when "
                      "that run finishes")


def check_typed_output(path: Path, suffix: str, what: str, *, option: str, overwrite: bool,
                       inputs: tuple = ()) -> Path:
    """An output of one file type (``suffix``: ``.png`` for --plot figures, ``.npz`` for arrays),
    checked before any work: the name must end in ``suffix`` (a writer that appends it, as
    ``np.savez`` does, would write another file than the one named), then
    :func:`lftml.safeio.check_output`."""
    from lftml.safeio import check_output

    if Path(path).suffix.lower() != suffix:
        raise LftmlError(f"{option} {path}: {what}; give a name ending in {suffix}")
    return check_output(path, overwrite=overwrite, inputs=inputs, option=option)


def require_file(path: Path, what: str = "file") -> Path:
    if not Path(path).exists():
        raise being_written(path, what) or LftmlError(f"{what} {path} does not exist")
    if Path(path).is_dir():
        raise LftmlError(f"{what} {path} is a directory, expected a file")
    return Path(path)


def given_on_command_line() -> set[str]:
    """Names of the current command's parameters the user typed (not defaults)."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return set()

    return {name for name in ctx.params if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
