"""Ray actor classes. Plain Python classes: `evaluator.run.driver` wraps them with `ray.remote` and owns
every resource option, `.remote` call and retry, so they can be tested without Ray."""
