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
    step = d.get("step_criterion_max_zscore")
    typer.echo(
        f"diagnostics: criterion max |z| = {d['criterion_max_zscore']:.2f} (L_c, carries the dt bias)"
        + ("" if step is None else f", at this dt {step:.2f} (L_eps, exact at any dt)")
        + f", boundary-term plateau |z| = {d['boundary_max_zscore']:.2f}, drift tail exponent = "
        f"{'none (no power-law tail)' if alpha is None else f'{alpha:.2f}'}, max |Im z| = {d['imag_max']:.3g}"
    )
    typer.echo("SUSPICIOUS: " + "; ".join(d["reasons"]) if d["suspicious"] else "no sign of wrong convergence")
    for note in d.get("notes", []):
        typer.echo("note: " + note)
    for key in ("out", "plot"):
        if key in summary:
            typer.echo(f"{key}: {summary[key]}")


def _check_run_options(dt: float, chains: int, steps: int, therm: Optional[int], bins: int, scheme: str,
                       checkpoint_every: int) -> None:
    if not (math.isfinite(dt) and dt > 0):
        raise LftmlError(f"--dt must be positive, got {dt}")
    if chains < 1:
        raise LftmlError(f"--chains must be >= 1, got {chains}")
    if steps < 4 * CRITERION_EVERY:
        raise LftmlError(f"--steps must be >= {4 * CRITERION_EVERY} (four bins of >= {CRITERION_EVERY} steps per chain "
                         f"for the errors), got {steps}")
    if therm is not None and therm < 0:
        raise LftmlError(f"--therm must be >= 0, got {therm}")
    if bins < 4:
        raise LftmlError(f"--bins must be >= 4 (the Gamma method needs several bins per chain), got {bins}")
    if scheme not in ("euler", "heun"):
        raise LftmlError(f"--scheme must be euler or heun, got {scheme!r}")
    if checkpoint_every < 1:
        raise LftmlError(f"--checkpoint-every must be >= 1 (bins), got {checkpoint_every}")


def _check_model_options(name: str, shape: Optional[str], **values: Any) -> None:
    if shape is not None and name != "bose-gas":
        raise LftmlError("--shape only applies to --model bose-gas")
    allowed_for = {"sigma": ("gaussian", "quartic"), "beta": ("u1",), "kappa": ("u1",), "m": ("bose-gas",),
                   "mu": ("u1", "bose-gas"), "lam": ("gaussian", "quartic", "bose-gas")}
    for key, value in values.items():
        allowed = allowed_for[key]
        if value is not None and name in ("gaussian", "quartic", "u1", "bose-gas") and name not in allowed:
            raise LftmlError(f"--{key} does not apply to --model {name} (it is for {', '.join(allowed)})")


#: the discretised-process criterion is sampled every this many Langevin steps (see lftml.complex.langevin)
CRITERION_EVERY = 4


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
    chains: int = typer.Option(64, "--chains", help="Independent chains (replicas, batched)."),
    steps: int = typer.Option(10000, "--steps", help="Measured Langevin steps per chain (Langevin time steps * dt)."),
    therm: Optional[int] = typer.Option(None, "--therm", help="Thermalisation steps per chain (Langevin time therm * dt; default steps/5)."),
    bins: int = typer.Option(100, "--bins", help="Stored equal-Langevin-time bins per chain (the unit of the error analysis)."),
    seed: int = SEED_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the run as an ensemble file (HDF5, complex fields)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out / --plot."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from OUT.ckpt (bit-identical)."),
    checkpoint_every: int = typer.Option(10, "--checkpoint-every", help="Bins per chain between checkpoints (OUT.ckpt)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure of the four diagnostics (PNG)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on when stderr is a terminal)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Run complex Langevin; print estimates with errors beside the exact values, and the diagnostics."""
    import sys

    from lftml.complex.langevin import ComplexLangevin
    from lftml.complex.runner import CLInterrupted, build_model, simulate
    from lftml.run import resolve_device

    if not (math.isfinite(dt) and dt > 0):
        raise LftmlError(f"--dt must be positive, got {dt}")
    if seed < 0:
        raise LftmlError(f"--seed must be a non-negative integer, got {seed}")
    name = model.replace("_", "-").lower()
    _check_model_options(name, shape, sigma=sigma, beta=beta, kappa=kappa, m=m, mu=mu, lam=lam)
    the_model = build_model(
        name, sigma=sigma, lam=lam, beta=beta, kappa=kappa, mu=mu, m=m,
        shape=parse_shape(shape) if shape is not None else None, phase_quenched=phase_quenched,
    )
    _check_run_options(dt, chains, steps, therm, bins, scheme, checkpoint_every)
    bins = min(bins, steps // CRITERION_EVERY)
    therm_steps = steps // 5 if therm is None else therm
    settings = ComplexLangevin(
        step_size=dt, scheme=scheme, adaptive=adaptive, thermalisation_time=therm_steps * dt,
        bin_time=steps * dt / bins, n_bins=bins, criterion_every=CRITERION_EVERY,
    )
    dev = resolve_device(device)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        summary = simulate(the_model, settings, n_chains=chains, seed=seed, out=out, plot=plot, progress=show and not json_out,
                           overwrite=overwrite, resume=resume, device=dev, checkpoint_every=checkpoint_every)
    except CLInterrupted as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(130) from None
    summary["device"] = str(dev)
    if json_out:
        emit_json(summary)
    else:
        _print_summary(summary)


@app.command("diagnose")
def diagnose_command(
    path: Path = typer.Argument(..., help="A run written by `lftml cl run --out`."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure of the four diagnostics (PNG)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Estimates and correctness diagnostics (criterion, boundary terms, drift tail, Im z) of a stored run."""
    from lftml.complex.runner import diagnose_file

    require_file(path, "run file")
    summary = diagnose_file(path, plot=plot, overwrite=overwrite)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"file: {path}")
        _print_summary(summary)
