"""What a run of either program shares: its outputs (final renders and videos of a fitted field)."""
