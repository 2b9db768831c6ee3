"""Refunds: money given back through the channel it came from."""
