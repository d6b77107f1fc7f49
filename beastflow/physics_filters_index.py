"""Names of the filter curves available offline (pyphot's bundled library)."""

from __future__ import annotations

import functools


@functools.cache
def known_filter_names() -> frozenset[str]:
    import pyphot

    return frozenset(pyphot.get_library().content)
