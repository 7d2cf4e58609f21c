"""The messages: wire formats, operational events, topic schemas and the JSON rule."""
