"""Bounds shared by the network's messages and the credit they earn (one number, one place)."""

MAX_DRAFT_TOKENS = 16  # tokens in one scout draft: also the most one draft receipt may credit
# Tokens in one draft of a drafting session (`Draft.tokens`): a draft is made from the scout's last known
# position, and by the time the Oracle checks it the Oracle has moved on by about one check, so it holds
# that lead plus the next check (at most MAX_DRAFT_TOKENS of it is checked and credited). With 16, a
# fully-accepted scout's drafts had only 16 minus the Oracle's last advance left to check: ~8 at best.
MAX_SESSION_DRAFT_TOKENS = 2 * MAX_DRAFT_TOKENS
MAX_VOUCHERS = 16  # receipts from other Oracles an asker may show with a request
