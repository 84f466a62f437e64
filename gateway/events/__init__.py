"""Domain events after a webhook: the durable bus, live fan-out, the notification worker.

`EventBus` (bus.py) carries events to `portal-gateway worker` at least once; `LiveHub`
(live.py) carries them to the GraphQL subscriptions of every replica; `EventPublisher`
(publisher.py) sends each event to both.
"""
