"""Jobs: each is fetch → pure ``plan_*`` → one storage transaction."""

# The jobs each provider has, in the order `syncd sync all` runs them, then the alerts job
# that serves every provider. Kept here, apart from the jobs themselves, so that parsing a
# command line imports none of them; `jobs.runner` checks its table against it.
PROVIDER_JOBS = ("catalog", "balance", "orders")
SYNC_ORDER = (*PROVIDER_JOBS, "alerts")
