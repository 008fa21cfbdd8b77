"""Scoring pairs: encode, plan, run passes in streams with out-of-memory backoff."""
