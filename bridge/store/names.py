"""The normalised Patient's Name used for case- and accent-insensitive matching."""

from __future__ import annotations

import unicodedata


def normalise_name(value: str) -> str:
    """Fold case and strip accents, keeping PN separators and DICOM wildcards.

    Used on both sides, when storing a name and when matching a query's
    pattern, so ``müller*`` finds ``MULLER^HANS`` and ``Müller^Hans``.
    """
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()
