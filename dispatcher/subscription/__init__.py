"""What a subscription asks for: filters, rate limits, the adaptive window, retry overrides."""
