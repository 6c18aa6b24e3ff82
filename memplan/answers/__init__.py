"""Answers composed from the floors below (memory/, perf/): api.py is their face."""
