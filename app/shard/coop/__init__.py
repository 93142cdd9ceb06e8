"""Cooperative generation: scouts draft, the verifier checks, the ledger credits."""
