"""Payment risk management: assess payments, top-ups, refunds and payouts before any channel is called.

Rules (one file each in `rules/`, settings in the database), a scikit-learn score, velocity counters
in Redis or the database, decisions stored with their inputs, a review queue, shadow mode,
back-tests and a daily report. docs/risk.md describes the rules and their fault behaviour.
"""
