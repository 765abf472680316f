"""Parameter scans: a TOML grid of ``lftml hmc`` option sets, one ensemble file per point, run on
any ``concurrent.futures.Executor`` or Dask cluster, and their finite-size analysis.

``load_scan(PATH)`` -> :class:`ScanSpec`; ``run_scan(spec, DIR, ...)`` runs it;
``analyze_scan(DIR)`` tabulates every point and finds the Binder crossings. See ``docs/scan.md``.
"""

from lftml.scan.grid import Point, ScanSpec, load_scan, parse_scan
from lftml.scan.runner import ScanResult, plan_scan, run_scan

__all__ = ["Point", "ScanSpec", "load_scan", "parse_scan", "run_scan", "plan_scan", "ScanResult", "analyze_scan"]


def analyze_scan(*args, **kwargs):
    """See :func:`lftml.scan.analysis.analyze_scan`."""
    from lftml.scan.analysis import analyze_scan as _analyze

    return _analyze(*args, **kwargs)
