"""Hooklane's engine: settings, event model, signing, producer, router, deliverer, store."""

__version__ = "0.1.0"
