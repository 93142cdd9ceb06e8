"""Priority and credit: who is served first, and what contributing earns."""
