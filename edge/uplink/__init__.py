"""MQTT uplink: the client factory, topics, and syncing the outbox to the broker."""
