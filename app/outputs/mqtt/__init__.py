"""MQTT: the sink (topics, counts, best snapshots), its bounded outbox, the paho client thread, settings, Home Assistant discovery."""
