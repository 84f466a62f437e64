"""Cross-request cache: the backend protocol, Redis and in-process backends, the entity cache."""
