"""``lftml cl``: complex Langevin runs of solvable models and the Bose gas, and their diagnostics.

    lftml cl run --model quartic --sigma -1+4j --lam 1 --dt 0.01 --adaptive --chains 128 --steps 5000 --json
    lftml cl run --model u1 --beta 0 --kappa 1 --mu 2 --dt 0.05 --adaptive --out u1.h5
    lftml cl run --model bose-gas --shape 4 4 4 4 --m 1 --lam 0 --mu 0.5 --dt 0.01 --scheme heun --json
    lftml cl diagnose run.h5 [--plot diag.png] [--json]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

from lftml.cli.common import JSON_OPTION, SEED_OPTION, emit_json, fmt_err, parse_shape, require_file
from lftml.errors import LftmlError

app = typer.Typer(help="Complex Langevin: solvable models, the Bose gas at finite mu, diagnostics.", no_args_is_help=True)


def _print_summary(summary: dict[str, Any]) -> None:
    model = summary["model"]
    typer.echo("model: " + ", ".join(f"{k}={v}" for k, v in model.items()))
    s = summary["sampler"]
    typer.echo(
        f"{s['scheme']} scheme, {'adaptive' if s['adaptive'] else 'fixed'} step {s['step_size']:g}, "
        f"{summary['n_chains']} chains, Langevin time {summary['langevin_time_per_chain']:.4g} per chain, "
        f"{summary['n_steps']} steps, seed {summary['seed']}"
    )
    typer.echo(f"{'observable':<14} {'Re':>22} {'Im':>22}   {'exact':>26}")
    for name, o in summary["observables"].items():
        re = fmt_err(o["value"][0], o["error"][0])
        im = fmt_err(o["value"][1], o["error"][1])
        ex = "-" if o["exact"] is None else f"{o['exact'][0]:.6g} {o['exact'][1]:+.6g}i"
        typer.echo(f"{name:<14} {re:>22} {im:>22}   {ex:>26}")
    d = summary["diagnostics"]
    alpha = d["drift_tail_exponent"]
    typer.echo(
        f"diagnostics: criterion max |z| = {d['criterion_max_zscore']:.2f}, boundary terms max |z| = "
        f"{d['boundary_max_zscore']:.2f}, drift tail exponent = {'none (no power-law tail)' if alpha is None else f'{alpha:.2f}'}, "
        f"max |Im z| = {d['imag_max']:.3g}"
    )
    typer.echo("SUSPICIOUS: " + "; ".join(d["reasons"]) if d["suspicious"] else "no sign of wrong convergence")
    for key in ("out", "plot"):
        if key in summary:
            typer.echo(f"{key}: {summary[key]}")


@app.command("run")
def run_command(
    model: str = typer.Option(..., "--model", help="gaussian | quartic | u1 | bose-gas"),
    sigma: Optional[str] = typer.Option(None, "--sigma", help="Complex sigma (gaussian, quartic), e.g. 1+1j or -1+4j [1+1j]."),
    lam: Optional[str] = typer.Option(None, "--lam", help="Quartic coupling (quartic: complex [1]; bose-gas: real [0])."),
    beta: Optional[float] = typer.Option(None, "--beta", help="u1: beta [1]."),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="u1: kappa [1]."),
    mu: Optional[float] = typer.Option(None, "--mu", help="Chemical potential (u1 [1], bose-gas [0])."),
    shape: Optional[str] = typer.Option(None, "--shape", help="bose-gas lattice, last axis = time, e.g. --shape 4 4 4 4."),
    m: Optional[float] = typer.Option(None, "--m", help="bose-gas mass [1]."),
    phase_quenched: bool = typer.Option(False, "--phase-quenched", help="bose-gas: simulate the phase-quenched theory (average phase factor)."),
    dt: float = typer.Option(0.01, "--dt", help="Step size eps (fixed) or eps_bar (adaptive)."),
    adaptive: bool = typer.Option(False, "--adaptive/--no-adaptive", help="Adaptive step eps_bar <K_max>/K_max (cures runaways)."),
    scheme: str = typer.Option("euler", "--scheme", help="euler (O(eps) bias) or heun (O(eps^2))."),
    chains: int = typer.Option(64, "--chains", help="Number of independent chains (batched)."),
    steps: int = typer.Option(10000, "--steps", help="Measured Langevin time per chain = steps * dt."),
    therm: Optional[int] = typer.Option(None, "--therm", help="Thermalisation: therm * dt of Langevin time per chain [steps/5]."),
    bins: int = typer.Option(100, "--bins", help="Equal-Langevin-time bins per chain (the unit of the error analysis)."),
    seed: int = SEED_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the run as an ensemble file (HDF5, complex fields)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure of the four diagnostics (PNG/PDF)."),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Show a progress bar."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Run complex Langevin; print estimates with errors beside the exact values, and the diagnostics."""
    from lftml.complex.langevin import ComplexLangevin
    from lftml.complex.runner import build_model, simulate

    if not (math.isfinite(dt) and dt > 0):
        raise LftmlError(f"--dt must be positive, got {dt}")
    if chains < 1:
        raise LftmlError(f"--chains must be >= 1, got {chains}")
    if steps < 4:
        raise LftmlError(f"--steps must be >= 4 (at least four equal-time bins per chain for the errors), got {steps}")
    if therm is not None and therm < 0:
        raise LftmlError(f"--therm must be >= 0, got {therm}")
    if bins < 4:
        raise LftmlError(f"--bins must be >= 4 (the Gamma method needs several bins per chain), got {bins}")
    if scheme not in ("euler", "heun"):
        raise LftmlError(f"--scheme must be euler or heun, got {scheme!r}")
    name = model.replace("_", "-").lower()
    if shape is not None and name != "bose-gas":
        raise LftmlError("--shape only applies to --model bose-gas")
    for flag, value, allowed in (
        ("--sigma", sigma, ("gaussian", "quartic")),
        ("--beta", beta, ("u1",)),
        ("--kappa", kappa, ("u1",)),
        ("--m", m, ("bose-gas",)),
        ("--mu", mu, ("u1", "bose-gas")),
        ("--lam", lam, ("gaussian", "quartic", "bose-gas")),
    ):
        if value is not None and name in ("gaussian", "quartic", "u1", "bose-gas") and name not in allowed:
            raise LftmlError(f"{flag} does not apply to --model {name} (it is for {', '.join(allowed)})")
    bins = min(bins, steps)
    the_model = build_model(
        name, sigma=sigma, lam=lam, beta=beta, kappa=kappa, mu=mu, m=m,
        shape=parse_shape(shape) if shape is not None else None, phase_quenched=phase_quenched,
    )
    therm_steps = steps // 5 if therm is None else therm
    settings = ComplexLangevin(
        step_size=dt, scheme=scheme, adaptive=adaptive, thermalisation_time=therm_steps * dt,
        bin_time=steps * dt / bins, n_bins=bins,
    )
    if out is not None and out.exists() and out.is_dir():
        raise LftmlError(f"--out {out} is a directory")
    summary = simulate(the_model, settings, n_chains=chains, seed=seed, out=out, plot=plot, progress=progress)
    if json_out:
        emit_json(summary)
    else:
        _print_summary(summary)


@app.command("diagnose")
def diagnose_command(
    path: Path = typer.Argument(..., help="A run written by `lftml cl run --out`."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure of the four diagnostics."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Estimates and correctness diagnostics (criterion, boundary terms, drift tail, Im z) of a stored run."""
    from lftml.complex.runner import diagnose_file

    require_file(path, "run file")
    summary = diagnose_file(path, plot=plot)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"file: {path}")
        _print_summary(summary)
