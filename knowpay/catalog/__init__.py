"""Products creators sell, their prices and refund policy."""
