"""One module per model family: how its Hugging Face config.json becomes a memplan Model, its PEFT defaults,
and the transformers class `memplan profile` builds.

A family module defines `FAMILY = Family(...)` (registry.py).  Adding a family is adding its module here and its
profiles under profiles/models/ (a profile holds the family's config.json); nothing else changes
(tests/test_families.py checks that a new module is all it takes).  Shared builders live in _decoder.py.
"""
