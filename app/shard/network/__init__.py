"""The network: the libp2p sidecar, its control API, peers and the messages between nodes."""
