"""Jobs: each is fetch → pure ``plan_*`` → one storage transaction."""
