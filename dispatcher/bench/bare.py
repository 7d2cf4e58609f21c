"""``python -m dispatcher.bench.bare router|deliverer``: a service without its ops side.

For ``hooklane bench --no-metrics`` only: the same engine as ``hooklane router`` /
``hooklane deliverer`` with no metrics object, no ops server and no pollers, so a run
can put a number on what observability costs per delivery. Not a supported way to
run Hooklane (no /readyz for an orchestrator to probe).
"""

from __future__ import annotations

import sys

from dispatcher.deliverer import Deliverer
from dispatcher.logs import configure_logging
from dispatcher.router.router import Router
from dispatcher.runtime import event_loop
from dispatcher.runtime.signals import run_until_signalled
from dispatcher.settings import Settings


def main(argv: list[str]) -> int:
    """Run the service named by ``argv[0]`` until SIGINT/SIGTERM."""
    if argv not in (["router"], ["deliverer"]):
        print("usage: python -m dispatcher.bench.bare router|deliverer", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    configure_logging(settings)
    service: Router | Deliverer = Router(settings) if argv[0] == "router" else Deliverer(settings)
    event_loop.run(run_until_signalled(service), settings.event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
