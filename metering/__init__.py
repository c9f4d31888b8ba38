"""Metering: usage, audit and security events from JetStream into ClickHouse; prices, energy, reports."""
