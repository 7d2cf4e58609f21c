"""The deliverer: lanes per webhook, the backlog scheduler beside them, the process.

- ``service``: the process (``Deliverer``, ``run_deliverer``);
- ``worker`` and ``lane``: the in-memory lanes; ``parking`` and ``store``: their
  Postgres side; ``scheduler``: the backlog scheduler serving parked lanes;
- ``partitions``: offsets and ownership of the deliveries partitions owned now;
- ``target_cache``: the cache of webhook targets.
"""

from dispatcher.deliverer.service import GROUP_ID, Deliverer, run_deliverer

__all__ = ["GROUP_ID", "Deliverer", "run_deliverer"]
