"""`make bench`: fake providers, the gateway and a load generator, each in its own process."""
