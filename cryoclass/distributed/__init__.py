"""cryoclass.distributed."""
