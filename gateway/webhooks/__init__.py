"""Provider webhooks: verify the signature on the raw body, normalise to domain events,
then (intake.py) dedupe, invalidate the cache and publish. One module per provider."""
