"""The markers around a job's JSON in its logs (the seed's docker-entrypoint contract).

Written by the CLI (`--markers`, always with `entrypoint`) and read by whoever cuts the JSON out of Ray job
logs (the webhook service, `kubectl logs`): a module of its own, below both, so that a reader imports two
strings and not the CLI with the evaluator behind it.
"""

MARKER_START, MARKER_END = "===JSON_OUTPUT_START===", "===JSON_OUTPUT_END==="


def wrap(document: str) -> str:
    """`document` between the markers, each on a line of its own."""
    return f"{MARKER_START}\n{document}\n{MARKER_END}"


def last_marked(logs: str) -> str | None:
    """The text between the last pair of markers in `logs` (a job may print several), or None."""
    lines = logs.splitlines()
    if MARKER_START not in lines or MARKER_END not in lines:
        return None
    end = len(lines) - 1 - lines[::-1].index(MARKER_END)
    starts = [i for i in range(end) if lines[i] == MARKER_START]
    return "\n".join(lines[starts[-1] + 1 : end]) if starts else None
