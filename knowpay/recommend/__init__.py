"""Recommendations from payment data: buyers also bought, for you, popular per kind."""
