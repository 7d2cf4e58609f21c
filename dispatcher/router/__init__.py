"""The router process: mirror topics in, delivery tasks out (ingest, the subscription index,
the catalog's topic schemas)."""
