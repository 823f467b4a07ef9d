"""`python -m evaluator` is the `policy-evaluator` command."""

from evaluator.cli.app import main

if __name__ == "__main__":
    main()
