"""The Osiris endpoint agent (docs/endpoints.md): enrols with a one-time
token, runs the appliance's check catalogue on this machine, keeps a durable
queue and streams it over mutual TLS until every event is acknowledged."""

__version__ = "0.1.0"
