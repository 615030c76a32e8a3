"""Transports that carry CapTP sessions: in-memory pipe, tcp-testing-only, and more to come."""
