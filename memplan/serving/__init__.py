"""Serving engines: what each engine and release does at startup, as data with citations (profiles/serving/) and
the engines' own default heuristics.  Imports nothing of memplan's arithmetic: memory/ reads these rules."""
