"""The headless scout (`shard scout`): drafts for Oracles with a small model; a node of its own,
with its own sidecar, sharing only the wire formats, receipts and draft-model transfer with the node."""
