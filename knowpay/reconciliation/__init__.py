"""Reconciliation (对账): prove every day that our books and each channel's bill agree."""
