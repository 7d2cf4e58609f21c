"""The deliverer: lanes per webhook, the backlog scheduler beside them, the process.

- ``deliverer``: the process (``Deliverer``; ``hooklane deliverer`` runs it through
  ``dispatcher.runtime.operations.run_deliverer``);
- ``worker`` and ``lane``: the in-memory lanes (``dispatching``: their ready queue and
  in-flight slots; ``parked_checks``: whether a new lane's webhook is parked;
  ``window_reports``: adaptive windows written back); ``parking``: their Postgres side;
  ``scheduler``: the backlog scheduler serving parked lanes;
- ``outcomes``: the one executor of the policy's steps, for lanes and backlog alike;
- ``partitions``: offsets and ownership of the deliveries partitions owned now;
- ``target_cache``: the cache of webhook targets; ``announcer``: operational events;
- ``attempt_log``: every attempt, written in batches.
"""

from dispatcher.deliverer.deliverer import GROUP_ID, Deliverer

__all__ = ["GROUP_ID", "Deliverer"]
