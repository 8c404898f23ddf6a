"""``python -m spikecode`` runs the command-line interface."""

from spikecode.cli import main

main()
