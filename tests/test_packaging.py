"""Packaging: the declared dependency bounds hold for what the tests run with, the numba cache
stays out of the source tree, and every test has a timeout."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_installed_versions_satisfy_the_declared_lower_bounds():
    """Catches a bound that is lower than anything the suite has run with claimed as supported
    while the tests need more (numpy >= 2 is needed by the tests)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    for dep in deps:
        name, bound = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9.]+)", dep.split(";")[0].strip()).groups()
        assert _version_tuple(md.version(name)) >= _version_tuple(bound), (name, md.version(name), bound)
    assert any(d.startswith("numpy>=2") for d in project["dependencies"])


def test_pytest_has_a_default_timeout():
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert int(opts["timeout"]) > 0


def test_numba_cache_is_outside_the_source_tree(monkeypatch, tmp_path):
    """The fused kernels' numba cache goes to the user's cache folder, not next to the sources."""
    from lftml.samplers import fused

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fused._compiled.cache_clear()
    try:
        fused._compiled()
        cache = Path(os.environ["NUMBA_CACHE_DIR"]).resolve()
    finally:
        fused._compiled.cache_clear()
    assert cache == (tmp_path / "lftml" / "numba").resolve()
    assert ROOT / "src" not in cache.parents


def test_keep_freed_memory_is_accepted_by_glibc():
    """The CLI's allocator setting (``lftml.devices.keep_freed_memory``) must reach glibc: mallopt
    returns 1 only for a known parameter, so a wrong constant or signature fails here (on Linux with
    glibc; elsewhere it is a documented no-op)."""
    import platform

    import pytest

    from lftml.devices import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory() is True


def test_keep_freed_memory_does_not_search_for_libc(monkeypatch):
    """Every CLI start calls ``keep_freed_memory``: it must find mallopt among the running process's
    symbols, not through ``ctypes.util.find_library`` (which may spawn ``ldconfig``, milliseconds per
    start). Fails if the lookup goes back to searching the library path."""
    import ctypes.util
    import platform

    import pytest

    from lftml.devices import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")

    def searched(name):
        raise AssertionError(f"find_library({name!r}) called")

    monkeypatch.setattr(ctypes.util, "find_library", searched)
    assert keep_freed_memory() is True
