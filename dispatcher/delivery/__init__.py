"""One delivery: the attempt, its policy, signing, failures, secrets and log lines."""
