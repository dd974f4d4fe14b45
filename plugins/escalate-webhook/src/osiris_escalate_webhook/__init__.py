"""Osiris L3 escalation channel: signed JSON webhooks."""
