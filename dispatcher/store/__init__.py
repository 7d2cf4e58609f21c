"""The Postgres store shared by the API and the dispatcher processes: one module per table.

A statement lives in the module of the table it writes; a read lives in the module of
the table whose rows it returns (a join that only filters, say by the webhook's tenant
or state, stays with the statement). Modules compose each other inside one
transaction where two tables change together (``backlog.give_up`` with
``failed_deliveries``, ``attempt_store.write_batch`` with ``webhook_health``).

=====================  ===================================================================
table                  module
=====================  ===================================================================
tenants                ``tenants``
api_keys               ``api_key_store``
topics                 ``topic_store``
webhooks               ``webhook_store`` (tenant reads and writes, routing rows),
                       ``webhook_targets`` (the deliverer's view, secrets decrypted),
                       ``webhook_health`` (health columns), ``webhook_options``
                       (delivery-option columns), ``webhook_changes`` (its NOTIFY channel)
attempts               ``attempt_store``
parked_webhooks,       ``backlog`` (one aggregate: the append/unpark locking and the
backlog                ``backlog_size`` counter span both)
failed_deliveries      ``failed_deliveries``
events                 ``events``
replays                ``replays``
portal_links,          ``portal``
portal_sessions
=====================  ===================================================================

``event_report`` assembles ``GET /events/:id`` from those modules and holds no SQL;
``db`` is connections and migrations, ``notifications`` the process's LISTEN connection.
"""
