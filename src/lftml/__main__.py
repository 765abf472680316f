"""``python -m lftml`` runs the command-line interface."""

from lftml.cli.main import main

main()
