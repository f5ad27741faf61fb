"""Hard word alignments from attention, in Pharaoh format (``0-0 1-2 2-1``).

Each output piece is aligned to the source piece it attends to most (the attention that chose
it, kept by the search for the chosen hypothesis); pieces are merged back into words
(:func:`word_index`: the words of the decoded text), and the pairs ``source word -
output word`` are listed once each, sorted. An output piece that attends most to the source's
end-of-sentence position is left unaligned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WORD_START = "\u2581"  # SentencePiece's word-boundary mark


def word_index(pieces: Sequence[str]) -> list[int | None]:
    """The word each piece belongs to (0-based), as the decoded text's whitespace-separated
    words: a piece starting with ``▁`` (or following a lone ``▁``) starts a word, others
    continue one; a lone ``▁`` belongs to no word (None)."""
    out: list[int | None] = []
    word, boundary = -1, True
    for piece in pieces:
        text = piece.replace(WORD_START, " ")
        if not text.strip():
            out.append(None)
            boundary = True
            continue
        if boundary or text[0] == " " or word < 0:
            word += 1
        out.append(word)
        boundary = text[-1] == " "
    return out


def pharaoh(src_pieces: Sequence[str], out_pieces: Sequence[str], weights: np.ndarray) -> str:
    """``weights``: output pieces x source positions (the source pieces, then EOS)."""
    src_word, out_word = word_index(src_pieces), word_index(out_pieces)
    pairs = set()
    # rounded to 1e-4 first: float rounding between batch shapes must not flip a near-tie
    for j, row in enumerate(np.round(np.asarray(weights, dtype=np.float64), 4)[: len(out_pieces)]):
        i = int(row.argmax())  # (the first of equal maxima)
        if i < len(src_pieces) and src_word[i] is not None and out_word[j] is not None:
            pairs.add((src_word[i], out_word[j]))
    return " ".join(f"{s}-{t}" for s, t in sorted(pairs))
