"""Pure rules shared by every module: money, ids, states, errors. No I/O here."""
