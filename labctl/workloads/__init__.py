"""Building the workloads once, content-addressed, and deploying them to hosts."""
