"""What the user describes (the ground floor: imports nothing else of memplan except errors)."""
