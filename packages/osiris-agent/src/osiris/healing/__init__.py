"""The healing ladder (L1 rules, L2 planners, L3 escalation), its safety
rails and the learning loop that promotes proven L2 fixes to L1 rules."""
