"""Point-group symmetry (RELION conventions)."""

from __future__ import annotations

import re

__all__ = ["parse_symmetry"]


def parse_symmetry(symbol: str) -> tuple[str, int]:
    """Parse a point-group symbol: ``'C1'``, ``'C7'``, ``'D3'``, ``'T'``, ``'O'``, ``'I'``.

    Returns ``(group_letter, n)`` (``n = 0`` for T, O, I). Raises ``ValueError`` on anything else.
    """
    s = str(symbol).strip().upper()
    m = re.fullmatch(r"([CD])(\d+)", s)
    if m and int(m.group(2)) >= 1:
        return m.group(1), int(m.group(2))
    if s in ("T", "O", "I"):
        return s, 0
    raise ValueError(f"unknown symmetry {symbol!r}: use C<n>, D<n>, T, O or I")
