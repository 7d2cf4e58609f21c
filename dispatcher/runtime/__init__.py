"""Running processes: the supervisor, signals, each process's ops side (with its Postgres
gauges), status, the embedded Postgres, the event loop."""
