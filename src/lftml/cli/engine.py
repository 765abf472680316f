"""Engine commands: ``hmc``, ``langevin``, ``analyze``, ``free``, ``demo``.

Theory flags name the parametrisation (see :mod:`lftml.theories.phi4`):
``--kappa K --lam L`` (hopping form), ``--m2 M --lam4 L`` ((m^2, lambda/4) form),
``--m2 M --g G`` ((m^2, g/4!) form), ``--m2 M`` alone: the free field.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from lftml.cli.common import (JSON_OPTION, PROGRESS_OPTION, SEED_OPTION, check_typed_output, deprecated_option,
                              emit_json, fmt_err, given_on_command_line, parse_shape, require_file, show_progress)
from lftml.errors import LftmlError

SHAPE_HELP = "Lattice extents, e.g. --shape 32 32 (any dimension)."

# options shared by the sampler commands (hmc, langevin)
SHAPE_OPTION = typer.Option(None, "--shape", help=SHAPE_HELP + " Required unless --resume (then taken from the file).")
KAPPA_OPTION = typer.Option(None, help="Hopping parameter (hopping form, with --lam).")
LAM_OPTION = typer.Option(None, help="Quartic coupling of the hopping form (with --kappa).")
M2_OPTION = typer.Option(None, help="Bare mass squared (with --lam4 or --g; alone: free field).")
LAM4_OPTION = typer.Option(None, help="Quartic coupling lambda in lambda phi^4/4 (with --m2).")
G_OPTION = typer.Option(None, help="Quartic coupling g in g phi^4/4! (with --m2).")
CHAINS_OPTION = typer.Option(16, help="Independent chains run as one batch.")
N_CONFIGS_OPTION = typer.Option(100, "--n-configs", help="Configurations to store per chain.")
START_OPTION = typer.Option("hot", help="hot (random) or cold (ordered, random sign per chain).")
OUT_OPTION = typer.Option(..., "--out", help="Output ensemble (HDF5).")
RESUME_OPTION = typer.Option(
    False, "--resume",
    help="Extend --out (bit-identical to an uninterrupted run); options not given are taken from the file.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing --out.")
DEVICE_OPTION = typer.Option("auto", help="auto (CUDA when available), cpu, cuda or cuda:N.")
DTYPE_OPTION = typer.Option("float64", help="float64 (default) or float32.")
CHECKPOINT_EVERY_OPTION = typer.Option(50, "--checkpoint-every", help="Configurations between file flushes.")


def build_theory(
    shape: str,
    kappa: Optional[float] = None,
    lam: Optional[float] = None,
    m2: Optional[float] = None,
    lam4: Optional[float] = None,
    g: Optional[float] = None,
):
    """Theory from CLI flags; exactly one parametrisation must be given completely."""
    from lftml.lattice import Lattice
    from lftml.theories import FreeScalar, Phi4

    if shape is None:
        raise LftmlError("--shape is required, e.g. --shape 32 32 (with --resume it is read from the file)")
    lattice = Lattice(parse_shape(shape))
    if kappa is not None or lam is not None:
        if m2 is not None or lam4 is not None or g is not None:
            raise LftmlError("mixing parametrisations: use either --kappa/--lam (hopping form) or --m2 with --lam4 or --g")
        if kappa is None or lam is None:
            raise LftmlError("the hopping form needs both --kappa and --lam")
        return Phi4.hopping(lattice, kappa, lam)
    if m2 is None:
        if lam4 is not None or g is not None:
            raise LftmlError("--lam4 and --g need --m2 (the bare mass squared)")
        raise LftmlError("no theory given: use --kappa K --lam L, or --m2 M [--lam4 L | --g G] (--m2 alone: free field)")
    if lam4 is not None and g is not None:
        raise LftmlError("give one quartic coupling: --lam4 (lambda/4 form) or --g (g/4! form), not both")
    if lam4 is not None:
        return Phi4.m2_lam4(lattice, m2, lam4)
    if g is not None:
        return Phi4.m2_g(lattice, m2, g)
    return FreeScalar(lattice, m2)


def build_hmc(theory, traj_length: float, md_steps: int, integrator: str, backend: str, step_jitter: float,
              algorithm: str = "hmc", mass_from: Optional[Path] = None, cluster: Optional[str] = None,
              cluster_every: Optional[int] = None, out: Optional[Path] = None):
    """HMC settings from the ``lftml hmc`` flags; every check (one line each) before anything is written."""
    from lftml.safeio import same_file
    from lftml.samplers import HMC
    from lftml.samplers.cluster import ClusterMove
    from lftml.samplers.kinetic import kinetic_from_name

    if algorithm not in ("hmc", "fa-hmc"):
        raise LftmlError(f"unknown --algorithm {algorithm!r}; choose hmc or fa-hmc")
    if cluster_every is not None and cluster is None:
        raise LftmlError("--cluster-every needs --cluster wolff or --cluster sw")
    if cluster_every is not None and cluster_every < 1:
        raise LftmlError(f"--cluster-every must be >= 1 (trajectories between cluster moves), got {cluster_every}")
    if mass_from is not None:
        if algorithm != "fa-hmc":
            raise LftmlError("--mass-from is for --algorithm fa-hmc; plain HMC has unit mass")
        if out is not None and same_file(out, mass_from):
            raise LftmlError(f"--out {out} is also the --mass-from pilot; choose another output file")
    move = ClusterMove(theory, cluster) if cluster is not None else None
    kinetic = kinetic_from_name(algorithm, theory, mass_from)
    return HMC.from_trajectory(theory, traj_length, md_steps, integrator, backend=backend, step_jitter=step_jitter,
                               kinetic=kinetic, cluster=move, cluster_every=cluster_every or 1)


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("<M>", "magnetisation"),
        ("<|M|>", "abs_magnetisation"),
        ("chi_2 = V(<M^2>-<M>^2)", "susceptibility"),
        ("V(<M^2>-<|M|>^2)", "susceptibility_abs"),
        ("U_L = 1-<M^4>/3<M^2>^2", "binder"),
        ("<S>/V", "action_density"),
    ]
    from lftml.analysis import REFERENCE_LABELS, reference_label

    ref_key = next((k for k in REFERENCE_LABELS if k in result), None)
    label = reference_label(ref_key, result)
    exact = result.get(ref_key, {}) if ref_key else {}
    lines = [f"{'observable':<26}{'value(error)':>22}{'tau_int':>16}" + (f"   {label}" if exact else "")]
    for row_label, key in rows:
        if key not in result:
            continue
        e = result[key]
        tau = f"{e['tau_int']:.2f}({e['tau_int_error']:.2f})" if e.get("tau_int") is not None else ""
        ex = exact.get(key)
        lines.append(f"{row_label:<26}{fmt_err(e['value'], e['error']):>22}{tau:>16}" + (f"   {ex:.6g}" if ex is not None else ""))
    info = [f"configs {result['n_configs']} x chains {result['n_chains']}", f"volume {result['volume']}"]
    if result.get("acceptance") is not None:
        if result.get("acceptance_error"):
            info.append(f"acceptance {fmt_err(result['acceptance'], result['acceptance_error'])}")
        elif result["acceptance"] in (0.0, 1.0):
            info.append(f"acceptance {result['acceptance']:g} ({'all' if result['acceptance'] else 'none'} of the "
                        "recorded updates accepted)")
        else:
            info.append(f"acceptance {result['acceptance']:.4f}")
    if result.get("exp_minus_dH"):
        e = result["exp_minus_dH"]
        info.append(f"<exp(-dH)> {fmt_err(e['value'], e['error'])}")
    if result.get("cost_per_independent_config_s"):
        c, ce = result["cost_per_independent_config_s"], result.get("cost_per_independent_config_s_error")
        info.append(f"cost/independent config {fmt_err(c, ce) if ce else format(c, '.3g')} s (from tau_int(|M|))")
    lines.append("; ".join(info))
    if result.get("effective_mass"):
        em = ", ".join(f"t={d['t']}: {fmt_err(d['value'], d['error'])}" for d in result["effective_mass"][:4])
        lines.append(f"effective mass {em}" + (f"   ({label}: {exact['effective_mass']:.6g})" if "effective_mass" in exact else ""))
    for w in result.get("warnings") or []:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


#: CLI option -> how to read its value from a stored run's metadata (for ``--resume`` without options).
#: Helpers adding sampler options register them here.
STORED_RUN_OPTIONS = {
    "chains": ("run", "n_chains"), "n_configs": ("run", "n_configs"), "therm": ("run", "n_therm"),
    "every": ("run", "every"), "seed": ("run", "seed"), "start": ("run", "start"), "adapt": ("run", "adapt"),
    "target_acceptance": ("run", "target_acceptance"), "dtype": ("run", "dtype"),
    "integrator": ("sampler", "integrator"), "md_steps": ("sampler", "n_steps"),
    "step_jitter": ("sampler", "step_jitter"), "dt": ("sampler", "dt"), "scheme": ("sampler", "scheme"),
    "cluster": ("sampler", "cluster"), "cluster_every": ("sampler", "cluster_every"),
}
THEORY_OPTIONS = ("shape", "kappa", "lam", "m2", "lam4", "g")


def with_stored_options(kind: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """For ``--resume`` on an existing file: options the user did not type are taken from the file
    (theory, chains, seed, sampler settings, the requested --n-configs); typed ones are kept and
    checked against the file by :func:`lftml.run.run`, which refuses contradictions by name.
    Returns ``(values, stored metadata or {})``."""
    out = values.get("out")
    if not values.get("resume") or out is None or not Path(out).is_file():
        return values, {}
    from lftml.run import stored_metadata

    meta = stored_metadata(out)
    if meta.get("kind") != kind:
        raise LftmlError(f"cannot resume {out} with 'lftml {kind}': it is a {meta.get('kind') or 'unknown'} ensemble")
    given = given_on_command_line()
    values = dict(values)
    for name, (section, key) in STORED_RUN_OPTIONS.items():
        if name in values and name not in given and key in (meta.get(section) or {}):
            values[name] = meta[section][key]
    theory = meta.get("theory") or {}
    if not theory:
        return values, meta
    stored: dict[str, Any] = {}  # the stored theory as the options that would make it
    if theory.get("name") == "free":
        stored = {"m2": theory["m2"]}
    elif theory.get("form") == "hopping":
        stored = {"kappa": theory["kappa"], "lam": theory["lam"]}
    elif theory.get("form") == "m2_lam4":
        stored = {"m2": theory["m2"], "lam4": theory["lam"]}
    elif theory.get("form") == "m2_g":
        stored = {"m2": theory["m2"], "g": theory["g"]}
    typed = given & (set(THEORY_OPTIONS) - {"shape"})
    if not typed:
        for name in ("kappa", "lam", "m2", "lam4", "g"):
            values[name] = stored.get(name)
    elif typed <= set(stored):
        # some couplings of the stored form typed (--kappa alone): the others from the file, so that
        # run() compares the typed ones with the file by name instead of "needs both --kappa and --lam"
        for name, v in stored.items():
            if name not in given:
                values[name] = v
    if "shape" not in given:
        values["shape"] = ",".join(str(int(n)) for n in theory.get("shape", []))
    return values, meta


def _run_command(sampler, theory, *, chains, n_configs, therm, every, seed, start, out, resume, adapt, target, device,
                 dtype, progress, as_json, kind, flush_every=50, overwrite=False):
    from lftml.analysis import analyze
    from lftml.ensemble import read_checkpoint
    from lftml.run import RunConfig, run

    config = RunConfig(
        n_chains=chains, n_configs=n_configs, n_therm=therm, every=every, seed=seed, start=start, adapt=adapt,
        target_acceptance=target, device=device, dtype=dtype,
    )
    if flush_every < 1:
        raise LftmlError(f"--checkpoint-every must be >= 1, got {flush_every}")
    complete = False
    if resume and Path(out).is_file():
        ck = read_checkpoint(out)
        complete = ck is not None and int(ck["n_configs"]) == n_configs
    elif resume and not Path(out).exists():  # allowed (a job script that always passes --resume), but said
        typer.echo(f"note: --resume: {out} does not exist yet, so this starts a new run", err=True)
    result = run(sampler, config, out, resume=resume, overwrite=overwrite, progress=show_progress(progress, as_json),
                 kind=kind, flush_every=flush_every)
    if complete:
        typer.echo(f"note: {out} already holds all {n_configs} configurations per chain; nothing to do "
                   "(pass a larger --n-configs to extend it)", err=True)
    summary: dict[str, Any] = {
        "out": str(out), "n_configs": result.n_configs, "n_chains": result.n_chains, "acceptance": result.acceptance,
        "sampler": result.sampler, "wall_time_s": result.wall_time_s,
    }
    if result.n_configs >= 4:
        # the table prints the warnings (as `warning:` lines); only --json needs them logged on stderr
        summary["analysis"] = analyze(out, correlators=False, log_warnings=as_json)
        # top level as in `lftml analyze --json` / `lftml extrapolate --json`: "observable: why" per flagged estimate
        summary["warnings"] = list(summary["analysis"]["warnings"])
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"{theory.describe()}: wrote {result.n_configs} x {result.n_chains} configurations to {out} "
               f"in {result.wall_time_s:.1f} s")
    if "analysis" in summary:
        typer.echo(_table(summary["analysis"]))


def register(app: typer.Typer) -> None:
    @app.command()
    def hmc(
        shape: str = SHAPE_OPTION,
        kappa: Optional[float] = KAPPA_OPTION,
        lam: Optional[float] = LAM_OPTION,
        m2: Optional[float] = M2_OPTION,
        lam4: Optional[float] = LAM4_OPTION,
        g: Optional[float] = G_OPTION,
        chains: int = CHAINS_OPTION,
        n_configs: int = N_CONFIGS_OPTION,
        therm: int = typer.Option(100, help="Thermalisation trajectories (not stored)."),
        every: int = typer.Option(1, help="Trajectories between stored configurations."),
        integrator: str = typer.Option("omelyan", help="leapfrog or omelyan (2MN)."),
        md_steps: int = typer.Option(10, "--md-steps", help="MD steps per trajectory."),
        traj_length: float = typer.Option(1.0, "--traj-length", help="Trajectory length (step = length / steps)."),
        step_jitter: float = typer.Option(0.1, "--step-jitter", help="Per-trajectory random step factor 1 +- j (breaks MD resonances)."),
        backend: str = typer.Option("auto", help="MD backend: auto (fused numba kernel on CPU when available), fused or eager."),
        algorithm: str = typer.Option("hmc", "--algorithm", help="hmc (unit mass) or fa-hmc (Fourier-accelerated: "
                                      "momentum covariance diagonal in momentum space; try --traj-length 1.5708)."),
        mass_from: Optional[Path] = typer.Option(None, "--mass-from", help="fa-hmc: mass 1/G(p) from the propagator "
                                                 "of this pilot ensemble (default: the quadratic part of the action)."),
        cluster: Optional[str] = typer.Option(None, "--cluster", help="wolff or sw: embedded-Ising cluster moves "
                                              "composed with the trajectories."),
        cluster_every: Optional[int] = typer.Option(None, "--cluster-every", help="Trajectories between cluster "
                                                    "moves (default 1; needs --cluster)."),
        adapt: bool = typer.Option(False, help="Adapt the step size during thermalisation, then freeze it."),
        target_acceptance: float = typer.Option(0.8, "--target-acceptance", help="Target of --adapt."),
        start: str = START_OPTION,
        seed: int = SEED_OPTION,
        out: Path = OUT_OPTION,
        resume: bool = RESUME_OPTION,
        overwrite: bool = OVERWRITE_OPTION,
        device: str = DEVICE_OPTION,
        dtype: str = DTYPE_OPTION,
        progress: Optional[bool] = PROGRESS_OPTION,
        checkpoint_every: int = CHECKPOINT_EVERY_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Hybrid Monte Carlo for phi^4 / free fields; writes an HDF5 ensemble and prints its analysis."""
        from dataclasses import replace

        o, stored = with_stored_options("hmc", dict(locals()))
        if stored and "algorithm" not in given_on_command_line():
            mass = (stored.get("sampler") or {}).get("mass") or {}
            o["algorithm"] = "fa-hmc" if mass.get("kind") == "fourier" else "hmc"
        theory = build_theory(o["shape"], o["kappa"], o["lam"], o["m2"], o["lam4"], o["g"])
        sampler = build_hmc(theory, traj_length, o["md_steps"], o["integrator"], backend, o["step_jitter"],
                            o["algorithm"], mass_from, o["cluster"], o["cluster_every"], out)
        if stored and "traj_length" not in given_on_command_line() and "step_size" in stored.get("sampler", {}):
            sampler = replace(sampler, step_size=float(stored["sampler"]["step_size"]))  # the stored step, exactly
        _run_command(sampler, theory, chains=o["chains"], n_configs=o["n_configs"], therm=o["therm"], every=o["every"],
                     seed=o["seed"], start=o["start"], out=out, resume=resume, adapt=o["adapt"],
                     target=o["target_acceptance"], device=device, dtype=o["dtype"], progress=progress,
                     as_json=as_json, kind="hmc", flush_every=checkpoint_every, overwrite=overwrite)

    @app.command()
    def langevin(
        shape: str = SHAPE_OPTION,
        kappa: Optional[float] = KAPPA_OPTION,
        lam: Optional[float] = LAM_OPTION,
        m2: Optional[float] = M2_OPTION,
        lam4: Optional[float] = LAM4_OPTION,
        g: Optional[float] = G_OPTION,
        dt: float = typer.Option(0.01, help="Langevin time step."),
        scheme: str = typer.Option("euler", help="euler (O(dt) bias) or heun (second order, O(dt^2) bias)."),
        chains: int = CHAINS_OPTION,
        n_configs: int = N_CONFIGS_OPTION,
        therm: int = typer.Option(1000, help="Thermalisation steps (not stored)."),
        every: int = typer.Option(10, help="Langevin steps between stored configurations."),
        start: str = START_OPTION,
        seed: int = SEED_OPTION,
        out: Path = OUT_OPTION,
        resume: bool = RESUME_OPTION,
        overwrite: bool = OVERWRITE_OPTION,
        device: str = DEVICE_OPTION,
        dtype: str = DTYPE_OPTION,
        progress: Optional[bool] = PROGRESS_OPTION,
        checkpoint_every: int = CHECKPOINT_EVERY_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Langevin dynamics (stochastic quantisation); results carry a step-size bias: extrapolate dt -> 0."""
        from lftml.samplers import Langevin

        o, _ = with_stored_options("langevin", dict(locals()))
        theory = build_theory(o["shape"], o["kappa"], o["lam"], o["m2"], o["lam4"], o["g"])
        sampler = Langevin(theory, o["dt"], o["scheme"])
        _run_command(sampler, theory, chains=o["chains"], n_configs=o["n_configs"], therm=o["therm"], every=o["every"],
                     seed=o["seed"], start=o["start"], out=out, resume=resume, adapt=False, target=0.8, device=device,
                     dtype=o["dtype"], progress=progress, as_json=as_json, kind="langevin",
                     flush_every=checkpoint_every, overwrite=overwrite)

    @app.command()
    def analyze(
        path: Path = typer.Argument(..., help="Ensemble file (HDF5) written by lftml, or the output folder of `lftml scan`."),
        discard: int = typer.Option(0, help="Leading configurations to drop."),
        S: float = typer.Option(2.0, "--window-factor", help="Wolff's window parameter S (1 to 2; larger: longer window)."),
        S_old: Optional[float] = typer.Option(None, "--S", hidden=True, help="Deprecated spelling of --window-factor."),
        plot: Optional[Path] = typer.Option(None, help="Save a figure (history, histogram, correlator) as PNG."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file (scan folder: an earlier analysis.json/csv and figures)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Observables with Gamma-method errors and tau_int (<M>, <|M|>, chi_2, U_L, correlator, ...).

        Given a scan folder, the same as `lftml scan-analyze DIR` with its defaults (one table of all points,
        Binder crossings, kappa_c, figures in the folder)."""
        from lftml.analysis import analyze as analyze_file

        if S_old is not None:
            deprecated_option("--S", "--window-factor")
            S = S_old
        if discard < 0:
            raise LftmlError(f"--discard must be >= 0, got {discard}")
        if path.is_dir():
            from lftml.cli.scan import print_scan_analysis
            from lftml.scan.analysis import analyze_scan
            from lftml.scan.index import INDEX

            if not (path / INDEX).is_file():
                raise LftmlError(f"{path} is a directory but not the output of `lftml scan` (no {INDEX}); give an "
                                 "ensemble file or a scan folder")
            if plot is not None or S != 2.0:
                raise LftmlError("--plot and --window-factor apply to one ensemble file; a scan folder's figures are "
                                 "written into it (see `lftml scan-analyze --help` for its options)")
            print_scan_analysis(analyze_scan(path, discard=discard, overwrite=overwrite), as_json)
            return
        require_file(path, "ensemble file")
        if plot is not None:
            check_typed_output(plot, ".png", "figures are PNG files", option="--plot", overwrite=overwrite, inputs=(path,))
        result = analyze_file(path, discard=discard, S=S, log_warnings=as_json)  # the table prints them
        if plot is not None:
            from lftml.plots import ensemble_overview

            ensemble_overview(path, plot, discard=discard)
        if as_json:
            emit_json(result)
        else:
            typer.echo(f"{path}: {result.get('kind')} ensemble, theory {result.get('theory')}")
            typer.echo(_table(result))
            if result.get("reweighted"):
                typer.echo(f"reweighted with the file's log weights (self-normalised; errors include the weights): "
                           f"ESS/N = {result['ess_fraction']:.3f}")

    @app.command()
    def extrapolate(
        paths: list[Path] = typer.Argument(..., help="Langevin ensembles of one theory at different --dt."),
        observable: list[str] = typer.Option(
            ["susceptibility", "binder", "action_density"], "--observable", "-o",
            help="Analysis keys to extrapolate (repeatable).",
        ),
        discard: int = typer.Option(0, help="Leading configurations to drop in each file."),
        degree: int = typer.Option(1, help="Correction terms in the fit: a + b dt^order + c dt^(2 order) + ..."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Extrapolate Langevin results to dt -> 0 (fit a + b dt^order; order 1 for Euler, 2 for Heun)."""
        from lftml.analysis import analyze as analyze_file
        from lftml.samplers.langevin import extrapolate as fit

        if len(paths) < 2:
            raise LftmlError("extrapolation needs ensembles at two or more step sizes")
        if degree < 1:
            raise LftmlError(f"--degree must be >= 1 (correction terms a + b dt^order + ...), got {degree}")
        if discard < 0:
            raise LftmlError(f"--discard must be >= 0, got {discard}")
        results = []
        for p in paths:
            require_file(p, "ensemble file")
            r = analyze_file(p, discard=discard, correlators=False)
            if r.get("kind") != "langevin":
                raise LftmlError(f"{p} is a {r.get('kind')} ensemble; extrapolation is for Langevin runs")
            results.append(r)
        theories = {str(r["theory"]) for r in results}
        if len(theories) != 1:
            raise LftmlError(f"the ensembles are of different theories: {sorted(theories)}")
        orders = {r["sampler"]["order"] for r in results}
        if len(orders) != 1:
            raise LftmlError("the ensembles mix Langevin schemes of different order; extrapolate each scheme alone")
        order = orders.pop()
        dts = [r["sampler"]["dt"] for r in results]
        if len(set(dts)) != len(dts):
            raise LftmlError(f"two ensembles share a step size ({dts}); give one per dt")
        if degree < 1:
            raise LftmlError(f"--degree must be >= 1 (correction terms dt^order, dt^(2 order), ...), got {degree}")
        if len(dts) < degree + 1:
            raise LftmlError(f"--degree {degree} needs at least {degree + 1} ensembles at different --dt, got {len(dts)}")
        out: dict[str, Any] = {"dt": dts, "order": order, "degree": degree, "theory": results[0]["theory"], "extrapolated": {},
                               "warnings": []}
        for key in observable:
            if key not in results[0]:
                raise LftmlError(f"unknown observable {key!r}; choose from {', '.join(k for k in results[0] if isinstance(results[0][k], dict) and 'value' in results[0][k])}")
            vals = [r[key]["value"] for r in results]
            errs = [r[key]["error"] for r in results]
            ex = fit(dts, vals, errs, order=order, degree=degree)
            out["extrapolated"][key] = {**ex.to_dict(), "values": vals, "errors": errs}
            if not ex.acceptable:
                out["warnings"].append(
                    f"{key}: the fit a + {' + '.join(f'c dt^{p}' for p in ex.powers)} does not describe the data "
                    f"(chi2/dof = {ex.chi2:.3g}/{ex.dof}, p = {ex.p_value:.2g}); the dt -> 0 value is not reliable: "
                    "drop the largest --dt or add a term (--degree)"
                )
        for w in out["warnings"]:
            typer.echo(f"warning: {w}", err=True)
        if as_json:
            emit_json(out)
            return
        typer.echo(f"dt -> 0 extrapolation (order {order}) over dt = {', '.join(f'{d:g}' for d in dts)}")
        for key, ex in out["extrapolated"].items():
            per = "  ".join(fmt_err(v, e) for v, e in zip(ex["values"], ex["errors"]))
            quality = (f"chi2/dof {ex['chi2']:.2f}/{ex['dof']} (p = {ex['p_value']:.2g})" if ex["dof"] > 0
                       else "chi2/dof -/0 (as many parameters as step sizes: fit quality unchecked)")
            flag = "" if ex["acceptable"] else "   NOT DESCRIBED BY THE FIT"
            typer.echo(f"  {key:<18} {fmt_err(ex['value'], ex['error']):>14}   {quality}   [{per}]{flag}")

    @app.command()
    def free(
        shape: str = typer.Option(None, "--shape", help=SHAPE_HELP),
        m2: float = typer.Option(..., help="Mass squared m^2 > 0."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Exact free-field values: <phi^2>, chi_2 = 1/m^2, U_L = 0, C(t), effective mass, spectrum."""
        from lftml.lattice import Lattice
        from lftml.theories import FreeScalar

        theory = FreeScalar(Lattice(parse_shape(shape)), m2)
        T = theory.lattice.shape[0]
        eig = theory.eigenvalues()
        result = {
            "shape": list(theory.lattice.shape), "m2": m2, "volume": theory.lattice.volume,
            "phi2": theory.phi2(), "susceptibility": theory.susceptibility(), "magnetisation": 0.0, "binder": 0.0,
            "magnetisation_variance": theory.magnetisation_variance(),
            "correlator": theory.zero_momentum_correlator()[: T // 2 + 1].tolist(),
            "effective_mass": theory.effective_mass(),
            "eigenvalue_min": float(eig[0]), "eigenvalue_max": float(eig[-1]),
            "log_partition": theory.log_partition(),
        }
        if as_json:
            emit_json(result)
            return
        typer.echo(f"free scalar field on {tuple(result['shape'])}, m^2 = {m2:g} (exact)")
        for key in ("phi2", "susceptibility", "binder", "effective_mass", "eigenvalue_min", "eigenvalue_max", "log_partition"):
            typer.echo(f"  {key:<16} {result[key]:.10g}")
        typer.echo("  C(t)             " + " ".join(f"{c:.6g}" for c in result["correlator"]))

    @app.command()
    def demo(
        out: Optional[Path] = typer.Option(None, help="Keep the ensemble here (default: a temporary file)."),
        overwrite: bool = OVERWRITE_OPTION,
        seed: int = SEED_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """A quick 2d phi^4 HMC run (16x16, kappa = 0.21, lambda = 0.022, the talk's symmetric point) and its analysis."""
        from lftml.lattice import Lattice
        from lftml.safeio import check_output
        from lftml.samplers import HMC
        from lftml.theories import Phi4

        if out is not None:
            check_output(out, overwrite=overwrite)

        theory = Phi4.hopping(Lattice((16, 16)), 0.21, 0.022)
        sampler = HMC.from_trajectory(theory, 1.0, 8, "omelyan")
        with tempfile.TemporaryDirectory() as tmp:
            target = out if out is not None else Path(tmp) / "demo.h5"
            _run_command(sampler, theory, chains=16, n_configs=200, therm=100, every=2, seed=seed, start="hot",
                         out=target, resume=False, adapt=False, target=0.8, device="cpu", dtype="float64",
                         progress=show_progress(None, as_json), as_json=as_json, kind="hmc", overwrite=overwrite)
