"""The `policy-evaluator` command: its commands (`app`), their options, and what they print on a terminal."""
