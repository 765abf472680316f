"""Figures and the markdown table of docs/near_critical.md from the two JSON results.

    python benchmarks/near_critical_figures.py [--cost benchmarks/near_critical_cost.json]
        [--binder benchmarks/near_critical_binder.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lftml.plots import pyplot, save_figure
from lftml.stats import format_value_error

ALGS = ("hmc", "fa-hmc", "hmc+sw", "heun")


def binder_axes(ax, data: dict):
    kappas = np.array(data["kappas"])
    for L, e in data["binder_jackknife"].items():
        ax.errorbar(kappas, e["value"], yerr=e["error"], marker="o", ms=3, capsize=2, label=f"L = {L}")
    for c in data.get("crossings", []):
        if np.isfinite(c["kappa"]):
            ax.errorbar([c["kappa"]], [c["U"]], xerr=[c["kappa_error"]], yerr=[c["U_error"]], color="k", marker="x")
    ax.axhline(0.61069, color="grey", ls="--", lw=0.8, label="2d Ising U* = 0.6107")
    ax.set_xlabel("kappa")
    ax.set_ylabel("U_L = 1 - <M^4>/(3<M^2>^2)")
    ax.set_title(f"phi^4 2d, lambda = {data['lambda']}")
    ax.legend(fontsize=8)
    return ax


def cost_axes(ax, data: dict, kappa: float, key: str = "absM"):
    for alg in ALGS:
        rows = sorted((r for r in data["runs"] if r["algorithm"] == alg and r["kappa"] == kappa), key=lambda r: r["L"])
        if rows:
            ax.errorbar([r["L"] for r in rows], [r[key]["cost_s"] * 1e3 for r in rows],
                        yerr=[r[key]["cost_error_s"] * 1e3 for r in rows], marker="o", ms=3, capsize=2, label=alg)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L")
    ax.set_ylabel(f"CPU ms per independent config ({key})")
    ax.set_title(f"kappa = {kappa}")
    ax.legend(fontsize=8)
    return ax


def cost_table(data: dict) -> str:
    lines = ["| kappa | L | algorithm | acc | CPU ms/update | tau_int abs M | tau_int M^2 | tau_int S/V | "
             "cost abs M (ms) | cost M^2 (ms) | cost S/V (ms) | bias (sigma) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: (r["kappa"], r["L"], ALGS.index(r["algorithm"]))):
        tau = lambda k: format_value_error(r[k]["tau_int"], r[k]["tau_int_error"])  # noqa: E731
        cost = lambda k: f"{r[k]['cost_s'] * 1e3:.3g}"  # noqa: E731
        bias = ""
        if "bias_sigma" in r:
            bias = ", ".join(f"{r['bias_sigma'][k]:+.1f}" for k in ("absM", "M2", "action_density"))
        acc = "" if r["acceptance"] is None else f"{r['acceptance']:.3f}"
        lines.append(f"| {r['kappa']} | {r['L']} | {r['algorithm']} | {acc} | {r['cpu_per_update_s'] * 1e3:.2f} | "
                     f"{tau('absM')} | {tau('M2')} | {tau('action_density')} | {cost('absM')} | {cost('M2')} | "
                     f"{cost('action_density')} | {bias} |")
    fits = data.get("z_fits_absM", {})
    if fits:
        lines += ["", "| kappa / algorithm | z from tau_int(abs M) ~ L^z | chi2/dof |", "|---|---|---|"]
        for k, f in fits.items():
            lines.append(f"| {k} | {format_value_error(f['z'], f['z_error'])} | {f['chi2']:.1f}/{f['dof']} |")
    return "\n".join(lines)


def binder_table(data: dict) -> str:
    lines = ["| L | " + " | ".join(f"{k:.4f}" for k in data["kappas"]) + " |",
             "|---|" + "---|" * len(data["kappas"])]
    for L, e in data["binder_jackknife"].items():
        lines.append(f"| {L} | " + " | ".join(format_value_error(v, s) for v, s in zip(e["value"], e["error"])) + " |")
    lines += ["", "| crossing | kappa* | U* |", "|---|---|---|"]
    for c in data.get("crossings", []):
        lines.append(f"| {c['L1']}/{c['L2']} | {format_value_error(c['kappa'], c['kappa_error'])} | "
                     f"{format_value_error(c['U'], c['U_error'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cost", default="benchmarks/near_critical_cost.json")
    ap.add_argument("--binder", default="benchmarks/near_critical_binder.json")
    ap.add_argument("--figures", default="docs/figures")
    args = ap.parse_args()
    plt = pyplot()
    if Path(args.binder).exists():
        data = json.loads(Path(args.binder).read_text())
        if "binder_jackknife" in data:
            fig, ax = plt.subplots(figsize=(6, 4))
            binder_axes(ax, data)
            save_figure(fig, Path(args.figures) / "near_critical_binder.png")
            print(binder_table(data))
    if Path(args.cost).exists():
        data = json.loads(Path(args.cost).read_text())
        kappas = sorted({r["kappa"] for r in data["runs"]})
        fig, axes = plt.subplots(1, len(kappas), figsize=(5 * len(kappas), 4), squeeze=False)
        for ax, kappa in zip(axes[0], kappas):
            cost_axes(ax, data, kappa)
        save_figure(fig, Path(args.figures) / "near_critical_cost.png")
        print()
        print(cost_table(data))


if __name__ == "__main__":
    main()
