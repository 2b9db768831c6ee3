"""Orders: what a buyer agreed to pay for, with prices snapshotted at creation."""
