"""Trust in a detector's scores: how they hold up under degraded photos, and how to act on them."""
