"""The deliverer: lanes per webhook, the backlog scheduler beside them, the process.

- ``deliverer``: the process (``Deliverer``; ``hooklane deliverer`` runs it through
  ``dispatcher.runtime.operations.run_deliverer``);
- ``worker`` and ``lane``: the in-memory lanes; ``parking`` and ``lane_store``: their
  Postgres side; ``scheduler``: the backlog scheduler serving parked lanes;
- ``partitions``: offsets and ownership of the deliveries partitions owned now;
- ``target_cache``: the cache of webhook targets; ``announcer``: operational events;
- ``attempt_log``: every attempt, written in batches.
"""

from dispatcher.deliverer.deliverer import GROUP_ID, Deliverer

__all__ = ["GROUP_ID", "Deliverer"]
