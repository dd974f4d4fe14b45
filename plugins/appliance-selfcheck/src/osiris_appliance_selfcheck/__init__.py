"""Checks of the appliance itself: is there room for evidence, is the clock
trustworthy for audit timestamps, are the keys and state private."""
