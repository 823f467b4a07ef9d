"""`run --plan-only`: the power analysis of a requested evaluation, before anything is spent
(`evaluator.reduce.power` does the arithmetic).

The spread of each environment's episode scores comes from the results database (every stored episode of the same
environment spec, whichever checkpoint played it). An environment with fewer than two stored episodes gets a
pilot first: the first policy's latest checkpoint plays `--min-episodes` of it, recorded like any run (the pilot's
episodes are then reused by the real run); with the database already holding them, nothing is played.
"""

from __future__ import annotations

from evaluator.config import EvalConfig, results_db_url
from evaluator.reduce.power import PowerPlan, plan_power
from evaluator.run.driver import evaluate, load_suite, source_settings
from evaluator.run.lineup import resolve_lineups
from evaluator.sources import list_candidates
from evaluator.store.episodes import EpisodeStore


def plan_only(config: EvalConfig, difference: float | None = None) -> PowerPlan:
    settings = source_settings(config.data_dir, config.wandb)
    listed = [c for uri in config.policy_uris for c in list_candidates(uri, config.checkpoints, settings)]
    suite, _ = resolve_lineups(
        load_suite(config.play, trust_remote_code=config.trust_remote_code), config.play, settings, listed
    )
    store = EpisodeStore(results_db_url(config.storage))
    samples = store.score_samples(suite)
    source = "results database"
    thin = [env for env, scores in samples.items() if len(scores) < 2]
    if thin:
        pilot = config.model_copy(
            update={
                "policy_uris": config.policy_uris[:1],
                "checkpoints": "latest",
                "episodes": config.min_episodes,
                "target_ci": None,
                "baseline": None,
                "normalize": None,
                "output_uri": None,
                "run_name": f"{config.run_name}-pilot",
            }
        )
        evaluate(pilot)
        samples = store.score_samples(suite)
        source = f"pilot: {config.min_episodes} episodes of {config.policy_uris[0]} on {', '.join(thin)}"
    return plan_power(
        suite.name,
        samples,
        checkpoints=len(listed),
        source=source,
        target_ci=config.target_ci,
        difference=difference,
        max_episodes=config.max_episodes if config.target_ci is not None else 100_000,
    )
