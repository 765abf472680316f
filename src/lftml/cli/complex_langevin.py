"""CLI for complex_langevin (placeholder: filled in by its issue)."""

import typer

app = typer.Typer(help="complex_langevin commands", no_args_is_help=True)
