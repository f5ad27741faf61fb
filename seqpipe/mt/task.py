"""The MT task for the trainer: parallel id sequences from the tokenize artifact, the
label-smoothed loss, and greedy BLEU on the validation split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
import sentencepiece as spm
import torch

from seqpipe.common.batching import DeviceBatch, decode_batches, pad_batch, recipe_train_batches
from seqpipe.common.search import greedy_search
from seqpipe.common.vocab import BOS_ID, EOS_ID, IdArray, Tokenizer
from seqpipe.data.text import read_lines
from seqpipe.models.seq2seq import label_smoothed_nll


@dataclass
class MTBatch(DeviceBatch):
    src: torch.Tensor  # batch x src_len (ids, EOS-terminated, PAD-padded)
    src_len: torch.Tensor  # batch
    tgt_in: torch.Tensor  # batch x tgt_len: BOS + target
    tgt_out: torch.Tensor  # batch x tgt_len: target + EOS
    real_tokens: int
    n_targets: int
    HOST_FIELDS = ("src_len",)  # packing reads lengths on the host


class MTTask:
    """Multi30k-style parallel data from the tokenize artifact."""

    def __init__(self, recipe: Any, tok_dir: Path, prep_dir: Path, tok: Tokenizer):
        self.recipe, self.cfg, self.tok = recipe, recipe.train, tok
        d = tok_dir
        self.prep = prep_dir
        src, tgt = IdArray(d, "train.src"), IdArray(d, "train.tgt")
        self.src = [src[i] for i in range(len(src))]
        self.tgt = [tgt[i] for i in range(len(tgt))]
        self.src_len = src.lengths() + 1  # + EOS
        self.tgt_len = tgt.lengths() + 1
        vsrc = IdArray(d, "valid.src")
        n = (
            len(vsrc)
            if self.cfg.valid_max_sentences is None
            else min(len(vsrc), self.cfg.valid_max_sentences)
        )
        self.valid_src = [vsrc[i] for i in range(n)]
        vtgt = IdArray(d, "valid.tgt")
        self.valid_tgt = [vtgt[i] for i in range(n)]
        self.valid_refs = tok.decode_tgt([t.tolist() for t in self.valid_tgt])
        self._sampled_epoch: int | None = None

    def num_batches_hint(self) -> int:
        return max(1, int((self.src_len.sum() + self.tgt_len.sum()) // self.cfg.max_tokens))

    def batches(self, epoch: int) -> list[np.ndarray]:
        alpha = self.recipe.tokenize.bpe_dropout
        if alpha > 0 and self._sampled_epoch != epoch:
            self._resample(epoch, alpha)
        return recipe_train_batches(self.src_len, self.tgt_len, self.recipe, epoch)

    def _resample(self, epoch: int, alpha: float) -> None:
        """BPE-dropout: a new sampled segmentation of the training data for this epoch."""

        spm.set_random_generator_seed(self.recipe.train_seed() * 1000 + epoch)
        src_text = read_lines(self.prep / "train.src")
        tgt_text = read_lines(self.prep / "train.tgt")
        kw = dict(enable_sampling=True, alpha=alpha, nbest_size=-1)
        self.src = [np.asarray(x, dtype=np.int32) for x in self.tok.src.encode(src_text, **kw)]
        self.tgt = [np.asarray(x, dtype=np.int32) for x in self.tok.tgt.encode(tgt_text, **kw)]
        self.src_len = np.array([len(x) + 1 for x in self.src])
        self.tgt_len = np.array([len(x) + 1 for x in self.tgt])
        self._sampled_epoch = epoch

    def collate(self, idx: np.ndarray) -> MTBatch:
        """The padded batch of training pairs ``idx``, on the CPU (in a DataLoader worker
        with ``train.workers``)."""
        src, src_len = pad_batch([self.src[i] for i in idx], suffix=EOS_ID)
        tgt_seqs = [self.tgt[i] for i in idx]
        tgt_in, _ = pad_batch(tgt_seqs, prefix=BOS_ID)
        tgt_out, tgt_len = pad_batch(tgt_seqs, suffix=EOS_ID)
        n_t = int(tgt_len.sum())
        return MTBatch(src, src_len, tgt_in, tgt_out, int(src_len.sum()) + n_t, n_t)

    def loss(self, model: torch.nn.Module, batch: MTBatch) -> torch.Tensor:
        """The batch's summed label-smoothed loss, on the device (not read back)."""
        logits = model(batch.src, batch.src_len, batch.tgt_in)
        return label_smoothed_nll(logits, batch.tgt_out, self.cfg.label_smoothing)[0]

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Teacher-forced loss and greedy BLEU on the validation split."""

        lens = np.array([len(s) + 1 for s in self.valid_src])
        hyps: list[list[int]] = [[] for _ in self.valid_src]
        nll_sum, n_tok = 0.0, 0
        for idx in decode_batches(lens, max_tokens=self.recipe.decode.batch_tokens):
            src, src_len = pad_batch([self.valid_src[i] for i in idx], suffix=EOS_ID)
            src = src.to(device)
            tgt_seqs = [self.valid_tgt[i] for i in idx]
            tgt_in, _ = pad_batch(tgt_seqs, prefix=BOS_ID)
            tgt_out, _ = pad_batch(tgt_seqs, suffix=EOS_ID)
            logits = model(src, src_len, tgt_in.to(device))
            _, nll, n = label_smoothed_nll(logits, tgt_out.to(device), 0.0)
            nll_sum += float(nll)
            n_tok += int(n)
            out = greedy_search(
                model, src, src_len, self.recipe.decode.max_len_a, self.recipe.decode.max_len_b
            )
            for i, h in zip(idx, out, strict=True):
                hyps[i] = h
        text = self.tok.decode_tgt(hyps)
        bleu = sacrebleu.corpus_bleu(text, [self.valid_refs]).score
        return {"bleu": bleu, "loss": nll_sum / max(1, n_tok)}
