"""Command-line interface (Typer). Each command parses, validates, and calls one library function."""
