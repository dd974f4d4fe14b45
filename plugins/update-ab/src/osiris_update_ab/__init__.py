"""Osiris plugin: updates from TUF-signed releases into the inactive A/B slot.

docs/updates.md is the user's guide; the design is "The appliance image
and its updates" in DESIGN.md.
"""
