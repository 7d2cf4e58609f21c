"""``python -m dispatcher.router``: what the supervisor spawns."""

from dispatcher.cli import main

raise SystemExit(main(["router"]))
