"""Osiris L3 escalation channel: e-mail over SMTP with STARTTLS."""
