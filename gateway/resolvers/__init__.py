"""Authorization and orchestration: what a field needs, from which loader. No provider code."""
