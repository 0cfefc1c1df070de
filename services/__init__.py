"""The four dwf services; each has the same shape (see docs/architecture.md)."""
