"""Experiments: specs, the run matrix, the runner and the run store."""
