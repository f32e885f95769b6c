"""pareto-proxy: a cost-aware, OpenAI-compatible inference routing proxy."""

__version__ = "0.1.0"
