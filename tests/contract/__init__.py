"""The connector contract suite: one suite, every platform; per-platform data in scenarios/."""
