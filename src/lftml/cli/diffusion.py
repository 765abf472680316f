"""CLI for diffusion (placeholder: filled in by its issue)."""

import typer

app = typer.Typer(help="diffusion commands", no_args_is_help=True)
