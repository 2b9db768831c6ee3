"""Access: entitlements that let a buyer use what they paid for."""
