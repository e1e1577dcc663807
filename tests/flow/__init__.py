"""Tests of the reference flow: domain, units, Kafka adapters, faults, commands."""
