"""Network infrastructure: the guarded URL fetcher that imports download through."""
