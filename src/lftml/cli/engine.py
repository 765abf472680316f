"""Engine commands: hmc, langevin, analyze, free."""

import typer


def register(app: typer.Typer) -> None:
    pass
