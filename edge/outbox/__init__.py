"""The store-and-forward outbox: durable queue, clock, retention and eviction."""
