"""Running processes: the supervisor, signals, parent death, the embedded Postgres, the loop."""
