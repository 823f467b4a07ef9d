"""The cost estimate of an evaluation: node lifetimes (the node clock) times the price table."""
