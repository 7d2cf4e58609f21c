"""Running processes: the supervisor, signals, each process's ops side, status, the
embedded Postgres, the event loop."""
