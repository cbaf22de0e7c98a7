"""The normalised Patient's Name used for case- and accent-insensitive matching."""

from __future__ import annotations

import unicodedata

# Accents are folded only on Latin, Greek and Cyrillic letters; on kana the
# combining marks (dakuten) change the sound, so だ must not match た.
_FOLD_BELOW = 0x0530


def normalise_name(value: str) -> str:
    """Fold case and strip accents, keeping PN separators and DICOM wildcards.

    Used on both sides, when storing a name and when matching a query's
    pattern, so ``müller*`` finds ``MULLER^HANS`` and ``Müller^Hans``.
    """
    out: list[str] = []
    base = 0
    for ch in unicodedata.normalize("NFKD", value):
        if unicodedata.combining(ch):
            if base >= _FOLD_BELOW:
                out.append(ch)
            continue
        base = ord(ch)
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).casefold()
