"""tophosts: which hosts got the most requests in the past round minute and hour."""

__version__ = "0.1.0"
