"""Ray actor classes. Plain Python classes, testable without Ray: the driver side (`evaluator.run`) wraps them
with `ray.remote`; `ray_cluster` chooses every resource option and starts the actors, the scheduler (and the
driver's start-up probe) make the `.remote` calls, `ray.wait`s and retries."""
