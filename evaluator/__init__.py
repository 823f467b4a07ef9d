"""The driver side of policy-evaluator: configuration, policy sources, planning, Ray driver, report."""

__version__ = "0.1.0"
