"""The planner's search: enumerate (the layouts engines run), prune (what cannot fit), rank (fastest or
cheapest, and why)."""
