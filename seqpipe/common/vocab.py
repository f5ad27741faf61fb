"""SentencePiece tokenizers (joint or separate) and the compact id format.

Ids: PAD=0, UNK=1, BOS=2, EOS=3 (fixed in every model we train). Text goes through
SentencePiece with the ``identity`` normalisation rule — the prepare stage has already applied
NFC and whitespace normalisation — so ``decode(encode(x)) == x`` exactly.

A tokenized split side is stored as two ``.npy`` files: ``<name>.ids.npy`` (all ids, int32,
one flat array) and ``<name>.offsets.npy`` (int64, n+1 offsets), read memory-mapped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from seqpipe.core.cache import verified

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """Source and target SentencePiece models (the same object when ``joint``)."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        joint = folder / "spm.model"
        if joint.is_file():
            src = tgt = spm.SentencePieceProcessor(model_file=str(verified(joint)))
        else:
            src = spm.SentencePieceProcessor(model_file=str(verified(folder / "src.model")))
            tgt = spm.SentencePieceProcessor(model_file=str(verified(folder / "tgt.model")))
        self.src, self.tgt = src, tgt
        self.joint = joint.is_file()

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.src.encode(lines)

    def encode_tgt(self, lines: list[str], alpha: float = 0.0) -> list[list[int]]:
        if alpha > 0:
            return self.tgt.encode(lines, enable_sampling=True, alpha=alpha, nbest_size=-1)
        return self.tgt.encode(lines)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)


def train_sentencepiece(inputs: list[Path], prefix: Path, cfg: Any, seed: int) -> None:
    """Train one SentencePiece model on ``inputs`` (training text only) as the recipe's
    ``tokenize:`` section ``cfg`` says (model_type, vocab_size, character_coverage,
    max_sentencepiece_sentences, threads)."""
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=[str(p) for p in inputs],
        model_prefix=str(prefix),
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        hard_vocab_limit=False,  # tiny corpora: take what is there instead of failing
        normalization_rule_name="identity",
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        input_sentence_size=cfg.max_sentencepiece_sentences,
        shuffle_input_sentence=True,
        num_threads=max(1, cfg.threads),
        minloglevel=2,
    )


def save_ids(folder: Path, name: str, seqs: list[list[int]]) -> None:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
    np.save(folder / f"{name}.ids.npy", flat)
    np.save(folder / f"{name}.offsets.npy", offsets)


class IdArray:
    """A tokenized split side, memory-mapped: ``arr[i] -> np.ndarray[int32]``."""

    def __init__(self, folder: Path, name: str):
        self.ids = np.load(Path(folder) / f"{name}.ids.npy", mmap_mode="r")
        self.offsets = np.load(Path(folder) / f"{name}.offsets.npy")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class CharTokenizer:
    """Character vocabulary for ASR targets, with the same interface as :class:`Tokenizer`.

    Ids: PAD (= CTC blank) 0, UNK 1, BOS 2, EOS 3, then the characters of the training
    transcripts in sorted order; a space is the token ``▁``. Saved as ``chars.json``.
    ``decode(encode(x)) == x`` for whitespace-normalised text made of known characters.
    """

    SPACE = "▁"
    SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
    FILE = "chars.json"

    def __init__(self, chars: list[str]):
        self.tokens = list(self.SPECIALS) + list(chars)
        self.ids = {c: i for i, c in enumerate(self.tokens) if i >= len(self.SPECIALS)}

    @classmethod
    def build(cls, lines: list[str]) -> CharTokenizer:
        chars = {cls.SPACE if c == " " else c for line in lines for c in " ".join(line.split())}
        return cls(sorted(chars))

    def save(self, folder: Path) -> None:
        data = {"type": "char", "space": self.SPACE, "tokens": self.tokens}
        (Path(folder) / self.FILE).write_text(
            json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> CharTokenizer:
        data = json.loads((Path(folder) / cls.FILE).read_text(encoding="utf-8"))
        return cls(data["tokens"][len(cls.SPECIALS) :])

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.tokens)

    def encode_tgt(self, lines: list[str], alpha: float = 0.0) -> list[list[int]]:
        return [
            [self.ids.get(self.SPACE if c == " " else c, UNK_ID) for c in " ".join(line.split())]
            for line in lines
        ]

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        out = []
        for seq in ids:
            chars = [
                "⁇" if i == UNK_ID else (" " if self.tokens[i] == self.SPACE else self.tokens[i])
                for i in seq
                if i == UNK_ID or (len(self.SPECIALS) <= i < len(self.tokens))
            ]
            out.append(" ".join("".join(chars).split()))
        return out


def load_target_tokenizer(folder: Path) -> Tokenizer | CharTokenizer:
    """The target tokenizer saved in ``folder``: characters (``chars.json``) or SentencePiece."""
    if (Path(folder) / CharTokenizer.FILE).is_file():
        return CharTokenizer.load(folder)
    return Tokenizer(folder)
