"""How results look: tables (tabulate) and JSON. Views only: no arithmetic here."""
