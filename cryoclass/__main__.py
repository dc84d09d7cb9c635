"""``python -m cryoclass``: the ``cryoclass`` command line (for an environment where the package
is importable but its console script is not on the PATH, e.g. a source checkout on PYTHONPATH)."""

from .cli import entry

if __name__ == "__main__":
    entry()
