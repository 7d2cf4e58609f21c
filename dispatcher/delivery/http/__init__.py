"""HTTP for deliveries: the ``Sender`` seam, the lean and metered senders, the SSRF rules."""
