"""Shared core of the LLMaaS platform: wire contract, subjects, settings, errors and the CLI."""

__version__ = "0.1.0"
