"""Bytes: the analytic memory model (no torch here, ever)."""
