"""``lftml scan SCAN.toml --out DIR`` and ``lftml scan-analyze DIR`` (see docs/scan.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from lftml.cli.common import JSON_OPTION, SEED_OPTION, emit_json, fmt_err
from lftml.errors import LftmlError


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        path: Path = typer.Argument(..., help="Scan file (TOML: \\[grid] axes, \\[fixed] lftml hmc options)."),
        out: Path = typer.Option(..., "--out", help="Output folder: one ensemble per point, index.json, scan.toml."),
        workers: Optional[int] = typer.Option(None, help="Worker processes of --cluster local (default: the machine's cores)."),
        cluster: Optional[str] = typer.Option(
            None, help="local (embedded Dask LocalCluster, default), serial (this process), slurm or pbs (dask-jobqueue; "
                       "settings from the \\[cluster] table)."),
        scheduler: Optional[str] = typer.Option(None, help="Address of a running Dask scheduler, e.g. tcp://host:8786."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar over points (default: when stderr is a terminal)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Run every point of a parameter scan (each an ordinary `lftml hmc` ensemble); reruns only what is missing."""
        from lftml.scan import load_scan, run_scan

        spec = load_scan(path)
        show = sys.stderr.isatty() if progress is None else progress

        def announce(backend) -> None:
            typer.echo(f"running on {backend.description}", err=True)
            if backend.dashboard:
                typer.echo(f"dask dashboard: {backend.dashboard}", err=True)

        try:
            result = run_scan(spec, out, cluster=cluster, workers=workers, scheduler=scheduler,
                              progress=show and not as_json, on_backend=announce)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: finished points are kept and interrupted ones resume bit-identically; "
                       f"rerun `lftml scan {path} --out {out}` to continue", err=True)
            raise typer.Exit(130)
        summary = {"out": str(result.out), "n_points": result.n_points, "n_ran": result.n_ran,
                   "n_skipped": result.n_skipped, "wall_time_s": result.wall_time_s, "backend": result.backend,
                   "dashboard": result.dashboard, "index": str(result.out / "index.json")}
        if as_json:
            emit_json(summary)
            return
        typer.echo(f"{result.n_points} points in {out}: {result.n_ran} run, {result.n_skipped} already complete "
                   f"({result.wall_time_s:.1f} s); index {out / 'index.json'}")

    @app.command("scan-analyze")
    def scan_analyze(
        directory: Path = typer.Argument(..., help="Output folder of `lftml scan`."),
        out: Optional[Path] = typer.Option(None, "--out", help="Folder for the table and figures (default: DIRECTORY)."),
        gamma_nu: float = typer.Option(1.75, "--gamma-nu", help="Exponent of the collapse chi_2 / L^(gamma/nu) (2d Ising: 7/4)."),
        nu: float = typer.Option(1.0, "--nu", help="Exponent of the collapse abscissa (kappa - kappa_c) L^(1/nu) (2d Ising: 1)."),
        kappa_c: Optional[float] = typer.Option(None, "--kappa-c", help="kappa_c of the collapse (default: the Binder crossing)."),
        bootstrap: int = typer.Option(500, "--bootstrap", help="Bootstrap samples over chains for the crossing errors."),
        discard: int = typer.Option(0, help="Leading configurations to drop in every file."),
        seed: int = SEED_OPTION,
        figures: bool = typer.Option(True, "--figures/--no-figures", help="Write binder.png, collapse.png, abs_magnetisation.png."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing analysis files."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Table of every observable per point (analysis.json, analysis.csv), Binder crossings and kappa_c, figures."""
        from lftml.scan.analysis import analyze_scan

        if bootstrap < 10:
            raise LftmlError(f"--bootstrap must be >= 10, got {bootstrap}")
        if discard < 0:
            raise LftmlError(f"--discard must be >= 0, got {discard}")
        res = analyze_scan(directory, out=out, gamma_nu=gamma_nu, nu=nu, kappa_c=kappa_c, n_bootstrap=bootstrap,
                           discard=discard, seed=seed, plot=figures, overwrite=overwrite)
        print_scan_analysis(res, as_json)


def print_scan_analysis(res: dict, as_json: bool) -> None:
    """What `lftml scan-analyze` (and `lftml analyze DIR`) prints: the JSON, or a short summary."""
    if as_json:
        emit_json(res)
        return
    typer.echo(f"{len(res['points'])} points; table {res['files']['json']}, {res['files']['csv']}")
    for c in res["crossings"]:
        if c.get("kappa") is None:
            typer.echo(f"  U_L crossing L = {c['L'][0]}, {c['L'][1]}: none in the kappa window ({c.get('reason', '')})")
        else:
            typer.echo(f"  U_L crossing L = {c['L'][0]}, {c['L'][1]}: kappa = {fmt_err(c['kappa'], c['error'])}")
    kc = res.get("kappa_c")
    if kc:
        typer.echo(f"kappa_c = {fmt_err(kc['value'], kc['error'])} (crossing of the two largest L; "
                   f"bootstrap over chains, {kc['n_bootstrap']} samples)")
    for name in res["files"].get("figures", []):
        typer.echo(f"figure {name}")
