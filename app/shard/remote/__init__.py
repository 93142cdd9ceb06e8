"""Remote inference over `/shard/infer/1.0.0`, both halves: the asker's side (`client`: a node with
no model has an Oracle generate) and the Oracle's side (`server`: a peer's request, bounded by
`request`, run on the local model behind this node's own user and paid with a receipt)."""
