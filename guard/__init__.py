"""The guard: screens every job's user-supplied text before it can reach a model."""
