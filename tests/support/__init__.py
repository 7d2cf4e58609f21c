"""Helpers the tests share: receivers, services in-process, certificates, fuzz data.

No module here is named ``test_*``, so pytest imports them only when a test does.
"""
