"""Payments: attempts to pay an order through a channel, their notifications and capture."""
