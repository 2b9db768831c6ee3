"""Transactional outbox and signed webhooks to other services."""
