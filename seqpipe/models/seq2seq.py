"""Encoder-decoder model, its builder (from the recipe's ``model:`` section) and the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqpipe.common.vocab import PAD_ID
from seqpipe.models.decoders import RecurrentDecoder
from seqpipe.models.encoders import EncoderOutput, RecurrentEncoder


class Seq2Seq(nn.Module):
    """Attention encoder-decoder. Search uses :meth:`encode` and ``decoder``'s step interface."""

    def __init__(self, encoder: RecurrentEncoder, decoder: RecurrentDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, src: Tensor, src_len: Tensor) -> EncoderOutput:
        """
        :param src: batch x src_len (ids) or batch x frames x feats
        :param src_len: batch
        """
        return self.encoder(src, src_len)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits.

        :param src: batch x src_len (ids) or batch x frames x feats
        :param src_len: batch
        :param tgt_in: batch x tgt_len, BOS + target
        :return: logits batch x tgt_len x tgt_vocab
        """
        return self.decoder(tgt_in, self.encode(src, src_len))


def build_model(
    *,
    cell: str = "gru",
    emb_size: int = 256,
    hidden_size: int = 256,
    enc_layers: int = 1,
    dec_layers: int = 1,
    bidirectional: bool = True,
    attention: str = "bahdanau",
    luong_score: str = "general",
    input_feeding: bool = True,
    bridge: bool = True,
    dropout: float = 0.3,
    tied_embeddings: bool = False,
    attention_query: str = "auto",
    src_vocab_size: int | None = None,
    tgt_vocab_size: int,
    input_size: int | None = None,
    frontend: nn.Module | None = None,
) -> Seq2Seq:
    """Build a :class:`Seq2Seq` from the recipe's ``model:`` keys.

    Text source: give ``src_vocab_size``. Feature source (ASR): give ``input_size`` and/or a
    ``frontend`` module. ``emb_size`` is both the source and the target embedding size;
    ``hidden_size`` is the per-direction encoder size and the decoder size.
    """
    if (src_vocab_size is None) == (input_size is None and frontend is None):
        raise ValueError(
            "build_model: give src_vocab_size (text source) or input_size/frontend "
            "(feature source), not both and not neither"
        )
    encoder = RecurrentEncoder(
        cell=cell,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=enc_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        vocab_size=src_vocab_size,
        emb_size=emb_size if src_vocab_size is not None else None,
        frontend=frontend,
    )
    decoder = RecurrentDecoder(
        cell=cell,
        vocab_size=tgt_vocab_size,
        emb_size=emb_size,
        hidden_size=hidden_size,
        num_layers=dec_layers,
        encoder_size=encoder.output_size,
        attention=attention,
        luong_score=luong_score,
        input_feeding=input_feeding,
        bridge=bridge,
        dropout=dropout,
        tied_embeddings=tied_embeddings,
        attention_query=attention_query,
    )
    return Seq2Seq(encoder, decoder)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared (tied) weights count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def label_smoothed_nll(
    logits: Tensor, target: Tensor, epsilon: float, ignore_index: int = PAD_ID
) -> tuple[Tensor, Tensor, Tensor]:
    """Token-level label-smoothed cross-entropy, summed (the caller normalises).

    The smoothed target puts ``1 - epsilon`` on the reference token and spreads ``epsilon``
    uniformly over the vocabulary without the padding token:
    ``loss = (1 - eps) * nll + eps * mean_{v != pad}(-log p_v)``. Computed in float32 or more.

    :param logits: batch x tgt_len x vocab
    :param target: batch x tgt_len (target + EOS, padded with ``ignore_index``)
    :return: loss_sum (scalar, for backward), nll_sum (scalar, detached), n_tokens (long scalar)
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    vocab = logits.size(-1)
    lprobs = F.log_softmax(logits.reshape(-1, vocab), dim=-1)  # tokens x vocab
    target = target.reshape(-1)
    keep = target != ignore_index
    # nll_loss and a masked row sum: no boolean-indexed copy of the tokens x vocab matrix
    # (its backward, a zero-fill plus index_put, cost ~10% of a CPU training step)
    nll_sum = F.nll_loss(lprobs, target, ignore_index=ignore_index, reduction="sum")
    if epsilon > 0.0:
        smooth = -lprobs.sum(dim=-1)
        n_classes = vocab
        if 0 <= ignore_index < vocab:
            smooth = smooth + lprobs[:, ignore_index]
            n_classes -= 1
        smooth_sum = (smooth * keep).sum()
        loss_sum = (1.0 - epsilon) * nll_sum + epsilon * smooth_sum / n_classes
    else:
        loss_sum = nll_sum
    return loss_sum, nll_sum.detach(), keep.sum()
