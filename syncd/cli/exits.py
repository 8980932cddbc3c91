"""Exit statuses, shared by every command: scripts and systemd rely on them."""

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # a job failed; the message says which and why
EXIT_USAGE = 2  # bad usage or config
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away, as if killed by SIGPIPE (128 + 13)
