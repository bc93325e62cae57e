"""Sparkplug B (Eclipse Sparkplug 3.0) as an uplink dialect: the appliance is an Edge Node."""
