"""Peers and harnesses for testing against other implementations (Endo, the OCapN suite)."""
