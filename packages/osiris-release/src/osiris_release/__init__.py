"""osiris-release: appliance releases published as a TUF repository of plain files.

docs/updates.md ("Making a release", "Key ceremonies") is the guide.
"""
