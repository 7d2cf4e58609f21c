"""The Postgres store shared by the API and the dispatcher processes."""
