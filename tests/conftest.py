"""The test run reads and writes no user catalog of the machine it runs on: memplan's user catalog
(catalog.user_profiles_dir: ~/.local/share/memplan/profiles, what `memplan trace` writes and the estimate reads
first) points at a fresh folder for the whole session, subprocesses included (set in the environment at import)."""
import os
import tempfile

os.environ["MEMPLAN_HOME"] = tempfile.mkdtemp(prefix="memplan-test-home-")
