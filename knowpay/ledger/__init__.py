"""Double-entry ledger: accounts, journal transactions and postings (DESIGN §4)."""
