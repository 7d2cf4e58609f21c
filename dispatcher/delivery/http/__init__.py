"""HTTP for deliveries: the ``Sender`` seam, the lean and metered senders, the factory
choosing one, the SSRF rules."""
