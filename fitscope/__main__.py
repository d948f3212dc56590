"""``python -m fitscope`` runs the command line."""

from fitscope.cli import main

main()
