"""cryoclass.core."""
