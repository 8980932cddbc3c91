"""Jobs: each is fetch -> pure ``plan_*`` -> one storage transaction.

``syncd.jobs.runner.JOBS`` is the one table of the jobs a provider has."""
