"""Running processes: the supervisor, signals, the ops side of a process, status, the loop."""
