"""Creator settlement (pending → available) and payouts to their bank accounts."""
