"""The HTTP edge: OpenAI-compatible routes in front of the NATS pipeline."""
