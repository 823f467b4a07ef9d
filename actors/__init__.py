"""Ray actor classes. Plain Python classes, testable without Ray (the in-process executor calls them directly):
the driver side wraps them with `ray.remote`; `evaluator.run.ray_cluster` chooses every resource option, and
`evaluator.run.ray_executor` starts the actors and makes every `.remote` call, `ray.wait`, `ray.get` and kill."""
