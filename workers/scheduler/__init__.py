"""The scheduler: places each screened job on a live worker that serves its model."""
