"""cryoclass.engine."""
