"""``python -m dispatcher.deliverer``: what the supervisor spawns."""

from dispatcher.cli import main

raise SystemExit(main(["deliverer"]))
