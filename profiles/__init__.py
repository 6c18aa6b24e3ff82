"""Data, not code: installed as the package `memplan.profiles` (see setup.py) and read by memplan.catalog
through importlib.resources."""
