"""Pure decision logic: targeting rules, campaign config, assignment, selection, templates, stats."""
