"""Placement as plugins: filters, then weighted scorers in [0, 1], then a picker, named by a policy.

Each plugin is a pure function of the request (``Ask``) and an immutable snapshot of the candidate
workers, tested with a table of its own; ``Placer`` holds the little state a policy needs (the
round-robin turn, llm-d's table of where prefixes were sent).
"""

from workers.scheduler.placement.policy import POLICIES, Placer, Policy, Weighted, weighted
from workers.scheduler.placement.request import Ask, Candidate

__all__ = ["POLICIES", "Ask", "Candidate", "Placer", "Policy", "Weighted", "weighted"]
