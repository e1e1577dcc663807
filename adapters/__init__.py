"""Adapters that implement the engine's ports: SQLAlchemy, Kafka and in-memory fakes."""
