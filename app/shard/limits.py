"""Bounds shared by the network's messages and the credit they earn (one number, one place)."""

MAX_DRAFT_TOKENS = 16  # tokens in one scout draft: also the most one draft receipt may credit
MAX_VOUCHERS = 16  # receipts from other Oracles an asker may show with a request
