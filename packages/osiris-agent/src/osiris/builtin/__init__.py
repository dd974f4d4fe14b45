"""Plugins shipped with the core, registered through the same ``osiris``
entry-point group as outside plugins."""
