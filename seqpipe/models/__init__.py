"""Recurrent encoder-decoder models (MT and ASR).

Token ids fixed across the project (defined in :mod:`seqpipe.common.vocab`)::

    PAD_ID = 0   padding, never predicted, ignored by the loss
    UNK_ID = 1   unknown token
    BOS_ID = 2   begin of sentence, first decoder input
    EOS_ID = 3   end of sentence, last decoder target

Modules, one concept each:

- ``encoders.py``  :class:`RecurrentEncoder` (text or audio features, packed sequences)
- ``attention.py`` Bahdanau (additive), Luong (dot/general) and location-aware attention
- ``decoders.py``  :class:`RecurrentDecoder` (teacher forcing, incremental ``step`` for search)
- ``seq2seq.py``   :class:`Seq2Seq`, :func:`build_model`, :func:`label_smoothed_nll`
"""

from seqpipe.common.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seqpipe.models.attention import (
    BahdanauAttention,
    LocationAwareAttention,
    LuongAttention,
)
from seqpipe.models.decoders import DecoderCache, DecoderState, RecurrentDecoder
from seqpipe.models.encoders import EncoderOutput, RecurrentEncoder
from seqpipe.models.seq2seq import (
    Seq2Seq,
    build_model,
    count_parameters,
    label_smoothed_nll,
)
