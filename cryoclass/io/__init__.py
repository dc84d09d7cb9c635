"""cryoclass.io."""
