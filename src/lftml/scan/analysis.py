"""The analysis of a scan: one table of every observable per point, Binder crossings and kappa_c.

* The table: :func:`lftml.analysis.analyze` of every finished point (Gamma-method errors and
  tau_int, see there), plus ``binder_bootstrap_error`` (bootstrap over independent chains, a
  cross-check of the Gamma-method error of U_L), as JSON and CSV.
* Binder crossings: for consecutive lattice sizes L1 < L2 (L = the first extent) at the same
  other grid values, ``d(kappa) = U_L2 - U_L1`` on the kappa values both sizes have; the crossing is
  the linear interpolation of d between the two neighbouring kappa where d changes sign (from
  below to above, the order-disorder side; any sign change if there is none such). Its error: the
  standard deviation over ``n_bootstrap`` resamplings of the chains of every point (chains are
  independent Markov chains, so resampling whole chains keeps their autocorrelation; every point
  is resampled independently, as its ensemble is). ``error_gamma`` is the linearised propagation
  of the Gamma-method errors of the four U_L values (a cross-check; both neglect the error of the
  linear interpolation itself, which shrinks with the kappa spacing squared).
* kappa_c: the crossing of the two largest L (the smallest finite-size shift), labelled as such.
* Figures: U_L vs kappa per L; the collapse chi_2 / L^(gamma/nu) vs (kappa - kappa_c) L^(1/nu)
  (2d Ising: gamma/nu = 7/4, nu = 1); <|M|> vs kappa per L.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lftml.errors import LftmlError
from lftml.safeio import atomic_output, check_output
from lftml.scan.index import INDEX, read_index

log = logging.getLogger(__name__)

__all__ = ["analyze_scan", "point_table", "binder_crossing", "bootstrap_binder", "plot_vs_kappa", "plot_collapse"]

OBSERVABLES = ("magnetisation", "abs_magnetisation", "susceptibility", "susceptibility_abs", "binder", "action_density")
FIGURES = ("binder.png", "collapse.png", "abs_magnetisation.png")


def bootstrap_binder(M2: np.ndarray, M4: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """U_L = 1 - <M^4>/(3 <M^2>^2) of ``n_bootstrap`` resamplings (with replacement) of the chains.
    ``M2``, ``M4``: ``(n_configs, n_chains)``; chains have equal length, so the pooled mean of the
    drawn chains is the mean of their chain means."""
    m2, m4 = np.asarray(M2, float).mean(axis=0), np.asarray(M4, float).mean(axis=0)
    n = m2.shape[0]
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    return 1.0 - m4[idx].mean(axis=1) / (3.0 * m2[idx].mean(axis=1) ** 2)


def binder_crossing(kappa: Sequence[float], u_small: Sequence[float], u_large: Sequence[float]) -> float | None:
    """kappa where U_large - U_small changes sign (linear interpolation between neighbours), or None.
    A change from negative to positive (U of the larger lattice rising above: the ordered side) is
    preferred; else the first change of sign."""
    k = np.asarray(kappa, float)
    d = np.asarray(u_large, float) - np.asarray(u_small, float)
    changes = [i for i in range(len(k) - 1) if np.sign(d[i]) != np.sign(d[i + 1]) and d[i] != d[i + 1]]
    if not changes:
        return None
    up = [i for i in changes if d[i] < 0 < d[i + 1]]
    i = (up or changes)[0]
    return float(k[i] - d[i] * (k[i + 1] - k[i]) / (d[i + 1] - d[i]))


def _size(shape: Sequence[int]) -> int:
    return int(shape[0])


def point_table(directory: str | Path, discard: int = 0) -> list[dict[str, Any]]:
    """One row per finished point of the scan in ``directory`` (index order)."""
    from lftml.analysis import analyze

    from lftml.safeio import lock_holder
    from lftml.scan.tasks import file_state

    index = read_index(directory)
    if not index["points"]:
        raise LftmlError(f"{directory} holds no scan index ({INDEX}); run `lftml scan SCAN.toml --out {directory}` first")
    live = lock_holder(Path(directory) / INDEX)  # a scan is writing the folder now
    rows = []
    unfinished: list[str] = []
    for name, entry in index["points"].items():
        path = Path(directory) / entry["file"]
        if not path.exists():
            unfinished.append(f"{name} ({entry.get('status')})")
            continue
        if entry.get("status") != "done":
            # a live scan rewrites its index every few seconds: the file is the truth for "done"
            state = file_state(path)
            want = (entry.get("options") or {}).get("n_configs")
            if state is None or want is None or state["n_configs"] < int(want):
                unfinished.append(f"{name} ({entry.get('status')})")
                continue
        res = analyze(path, discard=discard, correlators=False)
        opts = entry.get("options", {})
        shape = opts.get("shape") or res["theory"].get("shape")
        row: dict[str, Any] = {"name": name, "file": entry["file"], "parameters": entry.get("parameters", {})}
        row.update(shape=list(shape), L=_size(shape), volume=res["volume"], kappa=opts.get("kappa", row.get("kappa")),
                   n_configs=res["n_configs"], n_chains=res["n_chains"], acceptance=res.get("acceptance"))
        for key in OBSERVABLES:
            if key in res:
                row[key] = res[key]
        rows.append(row)
    running = f"a scan is writing {directory} now ({live}); " if live else ""
    if not rows:
        raise LftmlError(f"{directory}: {running}no point is finished yet"
                         + ("; analyse again when some are" if live else "; rerun the scan to finish them"))
    if unfinished:
        shown = ", ".join(unfinished[:3]) + (f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else "")
        log.warning("%s%d of %d points are not finished (%s); analysing the %d finished ones", running,
                    len(unfinished), len(index["points"]), shown, len(rows))
    return rows


def _groups(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by their grid values other than kappa and the lattice."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = tuple((k, json.dumps(v)) for k, v in r["parameters"].items() if k not in ("kappa", "shape"))
        out.setdefault(key, []).append(r)
    return out


def _crossings(rows, directory, discard, n_bootstrap, seed) -> list[dict[str, Any]]:
    from lftml.ensemble import Ensemble

    rng = np.random.default_rng(seed)
    boot: dict[str, np.ndarray] = {}
    for r in rows:  # fixed order: the draw of every point depends on the seed only
        with Ensemble.open(Path(directory) / r["file"]) as ens:
            obs = ens.observables
            M2, M4 = np.asarray(obs["M2"])[discard:], np.asarray(obs["M4"])[discard:]
        boot[r["name"]] = bootstrap_binder(M2, M4, n_bootstrap, rng)
        r["binder_bootstrap_error"] = float(np.std(boot[r["name"]], ddof=1))
    groups = _groups(rows)
    results = []
    for gkey, grows in groups.items():
        by_L: dict[int, dict[float, dict[str, Any]]] = {}
        for r in grows:
            if r.get("kappa") is not None:
                by_L.setdefault(r["L"], {})[float(r["kappa"])] = r
        sizes = sorted(by_L)
        for L1, L2 in zip(sizes, sizes[1:]):
            ks = sorted(set(by_L[L1]) & set(by_L[L2]))
            entry: dict[str, Any] = {"L": [L1, L2], "kappa_values": ks, **{k: json.loads(v) for k, v in gkey}}
            if len(ks) < 2:
                results.append({**entry, "kappa": None, "error": None, "reason": "fewer than two common kappa values"})
                continue
            u1 = [by_L[L1][k]["binder"]["value"] for k in ks]
            u2 = [by_L[L2][k]["binder"]["value"] for k in ks]
            kc = binder_crossing(ks, u1, u2)
            if kc is None:
                results.append({**entry, "kappa": None, "error": None, "reason": "U_L of the two sizes do not cross"})
                continue
            b1 = np.stack([boot[by_L[L1][k]["name"]] for k in ks], axis=1)
            b2 = np.stack([boot[by_L[L2][k]["name"]] for k in ks], axis=1)
            samples = [binder_crossing(ks, x, y) for x, y in zip(b1, b2)]
            ok = np.array([s for s in samples if s is not None], float)
            entry.update(kappa=kc, n_bootstrap=int(n_bootstrap), bootstrap_without_crossing=int(len(samples) - len(ok)))
            if len(ok) < 0.9 * len(samples):
                entry.update(error=None, reason=f"{len(samples) - len(ok)} of {len(samples)} bootstrap samples have no "
                             "crossing: widen the kappa window or add statistics")
            else:
                entry["error"] = float(np.std(ok, ddof=1))
            entry["error_gamma"] = _gamma_error(ks, by_L[L1], by_L[L2], kc)
            results.append(entry)
    return results


def _gamma_error(ks, p1, p2, kc) -> float | None:
    """Linearised error of the interpolated crossing from the Gamma-method errors of the 4 U_L used."""
    i = max(j for j in range(len(ks) - 1) if ks[j] <= kc) if kc >= ks[0] else 0
    i = min(i, len(ks) - 2)
    vals = [p1[ks[i]]["binder"], p1[ks[i + 1]]["binder"], p2[ks[i]]["binder"], p2[ks[i + 1]]["binder"]]
    x = np.array([v["value"] for v in vals])
    e = np.array([v["error"] for v in vals])

    def f(v):
        d0, d1 = v[2] - v[0], v[3] - v[1]
        return ks[i] - d0 * (ks[i + 1] - ks[i]) / (d1 - d0)

    grad = []
    for j in range(4):
        h = 1e-6 * max(1e-3, e[j])
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        grad.append((f(xp) - f(xm)) / (2 * h))
    err = float(np.sqrt(np.sum((np.array(grad) * e) ** 2)))
    return err if math.isfinite(err) else None


def plot_vs_kappa(rows, key: str, ax, ylabel: str | None = None):
    """``key`` (value with error bars) against kappa, one curve per lattice size L."""
    for L in sorted({r["L"] for r in rows}):
        rs = sorted((r for r in rows if r["L"] == L and r.get("kappa") is not None), key=lambda r: r["kappa"])
        ax.errorbar([r["kappa"] for r in rs], [r[key]["value"] for r in rs], yerr=[r[key]["error"] for r in rs],
                    marker="o", ms=3, capsize=2, label=f"L = {L}")
    ax.set_xlabel(r"$\kappa$")
    ax.set_ylabel(ylabel or key)
    ax.legend(fontsize=8)
    return ax


def plot_collapse(rows, ax, kappa_c: float, gamma_nu: float = 1.75, nu: float = 1.0, key: str = "susceptibility"):
    """chi_2 / L^(gamma/nu) against (kappa - kappa_c) L^(1/nu): one curve for all L at the right exponents."""
    for L in sorted({r["L"] for r in rows}):
        rs = sorted((r for r in rows if r["L"] == L and r.get("kappa") is not None), key=lambda r: r["kappa"])
        x = [(r["kappa"] - kappa_c) * L ** (1.0 / nu) for r in rs]
        s = L ** (-gamma_nu)
        ax.errorbar(x, [r[key]["value"] * s for r in rs], yerr=[r[key]["error"] * s for r in rs], marker="o", ms=3,
                    capsize=2, label=f"L = {L}")
    ax.set_xlabel(rf"$(\kappa - \kappa_c)\, L^{{1/\nu}}$  ($\kappa_c$ = {kappa_c:.5g}, $\nu$ = {nu:g})")
    ax.set_ylabel(rf"$\chi_2 / L^{{\gamma/\nu}}$  ($\gamma/\nu$ = {gamma_nu:g})")
    ax.legend(fontsize=8)
    return ax


def analyze_scan(
    directory: str | Path,
    *,
    out: str | Path | None = None,
    gamma_nu: float = 1.75,
    nu: float = 1.0,
    kappa_c: float | None = None,
    n_bootstrap: int = 500,
    discard: int = 0,
    seed: int = 0,
    plot: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Analyse the scan in ``directory``; write ``analysis.json``, ``analysis.csv`` (and figures)
    to ``out`` (default: ``directory``). Returns the JSON content."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LftmlError(f"{directory} is not a folder; give the --out folder of `lftml scan`")
    if nu <= 0:
        raise LftmlError(f"--nu must be > 0, got {nu}")
    target = Path(out) if out is not None else directory
    if not target.is_dir():
        raise LftmlError(f"--out {target} is not a folder; create it first")
    names = ["analysis.json", "analysis.csv", *(FIGURES if plot else ())]
    for n in names:
        check_output(target / n, overwrite=overwrite, option="--out" if out is not None else "the scan's analysis output")
    rows = point_table(directory, discard=discard)
    crossings = _crossings(rows, directory, discard, n_bootstrap, seed)
    found = [c for c in crossings if c.get("kappa") is not None and c.get("error") is not None]
    kc = None
    if found:
        best = max(found, key=lambda c: tuple(c["L"]))
        kc = {"value": best["kappa"], "error": best["error"], "error_gamma": best.get("error_gamma"), "L": best["L"],
              "n_bootstrap": n_bootstrap, "method": "U_L crossing of the two largest L (finite-size shift not extrapolated)"}
    result: dict[str, Any] = {"directory": str(directory), "points": rows, "crossings": crossings, "kappa_c": kc,
                              "settings": {"gamma_nu": gamma_nu, "nu": nu, "discard": discard, "seed": seed,
                                           "n_bootstrap": n_bootstrap}}
    files: dict[str, Any] = {"json": str(target / "analysis.json"), "csv": str(target / "analysis.csv"), "figures": []}
    result["files"] = files
    with atomic_output(target / "analysis.csv") as tmp:
        tmp.write_text(_csv(rows))
    if plot:
        from lftml.plots import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.6))
        plot_vs_kappa(rows, "binder", ax, r"$U_L = 1 - \langle M^4\rangle / 3\langle M^2\rangle^2$")
        if kc:
            ax.axvspan(kc["value"] - kc["error"], kc["value"] + kc["error"], color="0.8", zorder=0)
        files["figures"].append(str(save_figure(fig, target / "binder.png")))
        fig, ax = plt.subplots(figsize=(5, 3.6))
        k0 = kappa_c if kappa_c is not None else (kc["value"] if kc else float(np.median([r["kappa"] for r in rows])))
        plot_collapse(rows, ax, k0, gamma_nu, nu)
        files["figures"].append(str(save_figure(fig, target / "collapse.png")))
        fig, ax = plt.subplots(figsize=(5, 3.6))
        plot_vs_kappa(rows, "abs_magnetisation", ax, r"$\langle |M| \rangle$")
        files["figures"].append(str(save_figure(fig, target / "abs_magnetisation.png")))
    from lftml.cli.common import to_jsonable

    with atomic_output(target / "analysis.json") as tmp:
        tmp.write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
    return to_jsonable(result)


def _csv(rows: list[dict[str, Any]]) -> str:
    scalar = []
    for r in rows:
        for k, v in {**r["parameters"], **r}.items():
            if k not in OBSERVABLES and k != "parameters" and k not in scalar:
                scalar.append(k)
    obs = [k for k in OBSERVABLES if any(k in r for r in rows)]
    header = scalar + [f"{k}{s}" for k in obs for s in ("", "_error", "_tau_int")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        line = []
        for k in scalar:
            v = r.get(k, r["parameters"].get(k))
            line.append("x".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else v))
        for k in obs:
            e = r.get(k) or {}
            line += [e.get("value", ""), e.get("error", ""), e.get("tau_int", "")]
        w.writerow(line)
    return buf.getvalue()
