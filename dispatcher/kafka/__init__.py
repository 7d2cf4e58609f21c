"""Kafka: the embedded brokers, topics, the group consumer, the producer, dead letters."""
