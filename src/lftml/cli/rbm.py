"""CLI for rbm (placeholder: filled in by its issue)."""

import typer

app = typer.Typer(help="rbm commands", no_args_is_help=True)
