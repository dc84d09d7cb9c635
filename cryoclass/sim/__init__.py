"""cryoclass.sim."""
