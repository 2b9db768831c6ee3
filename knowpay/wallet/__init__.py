"""The buyer's coin wallet: a ledger liability, 1 coin = 1 minor unit of the platform currency."""
