"""``syncd run``: the scheduler, systemd notifications, signals."""
