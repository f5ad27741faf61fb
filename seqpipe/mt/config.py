"""The MT recipe: its sections and its stages.

``prepare → tokenize → train → decode → score``; each stage's key hashes what it reads (its
sections, the keys named below) and its upstream keys. Torch-free: ``seqpipe status`` and
``seqpipe config`` load it without torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from seqpipe.common.settings import SEARCHES, check_recipe_decode
from seqpipe.core.recipe import (
    DataConfig,
    DecodeConfig,
    ModelConfig,
    Recipe,
    TokenizeConfig,
    TrainConfig,
)
from seqpipe.core.schema import Section
from seqpipe.core.stage import CHECKPOINTS, StageSpec
from seqpipe.data.registry import data_fingerprint

METRICS = ("bleu", "chrf")


class LocalSplit(Section):
    src: str = Field()  # path of the source-side text file (one sentence a line)
    tgt: str = Field()  # path of the target-side text file


class MTDataConfig(DataConfig):
    # registry name (multi30k, tatoeba_deu_eng, tatoeba_fra_eng) or 'local'
    dataset: str = "multi30k"
    src_lang: str = "en"
    tgt_lang: str = "de"
    # dataset: local — split name -> {src, tgt} file paths
    local: dict[str, LocalSplit] | None = None
    max_words: int = Field(80, ge=1)  # drop training pairs with more words on a side
    # drop training pairs whose word-count ratio exceeds this
    max_length_ratio: float = Field(3.0, gt=0)
    # keep only the first N training pairs (quick runs, tests)
    max_train_lines: int | None = Field(None, ge=1)
    # keep only the first N valid/test pairs (quick runs, tests)
    max_eval_lines: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _local(self) -> MTDataConfig:
        if self.dataset == "local" and not self.local:
            raise ValueError("data.local: required when data.dataset is 'local'")
        return self


class MTTokenizeConfig(TokenizeConfig):
    joint: bool = True  # one vocabulary for source and target
    bpe_dropout: float = Field(0.0, ge=0, lt=1)  # subword sampling alpha at training time (0 = off)


class MTTrainConfig(TrainConfig):
    valid_metric: Literal["bleu", "loss"] = "bleu"


class MTDecodeConfig(DecodeConfig):
    search: Literal[SEARCHES["mt"]] = "beam"  # type: ignore[valid-type]
    # lexical shortlist: target candidates per source piece (0 = off)
    shortlist: int = Field(0, ge=0, le=100)
    # most frequent target pieces always in the shortlist
    shortlist_frequent: int = Field(300, ge=0)


class MTScoreConfig(Section):
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: list(METRICS))  # type: ignore[valid-type]
    bleu_tokenize: str = "13a"
    lowercase: bool = False


class MTRecipe(Recipe):
    task: Literal["mt"] = "mt"
    data: MTDataConfig = Field(default_factory=MTDataConfig)
    tokenize: MTTokenizeConfig = Field(default_factory=MTTokenizeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: MTTrainConfig = Field(default_factory=MTTrainConfig)
    decode: MTDecodeConfig = Field(default_factory=MTDecodeConfig)
    score: MTScoreConfig = Field(default_factory=MTScoreConfig)

    @model_validator(mode="after")
    def _decodable(self) -> MTRecipe:
        check_recipe_decode(self)
        return self

    def data_fingerprint(self) -> Any:
        return data_fingerprint(self)

    def task_stages(self, m: str) -> list[StageSpec]:
        # validation decodes greedily with decode's length limits
        valid = ("decode.max_len_a", "decode.max_len_b")
        return [
            StageSpec("tokenize", 2, m + "tokenize", ("task", "seed", "tokenize"), ("prepare",)),
            StageSpec(
                "train",
                2,
                m + "train",
                ("task", "seed", "model", "train", *valid),
                ("prepare", "tokenize"),
                resumable=True,
                scratch=CHECKPOINTS,
            ),
            StageSpec("decode", 3, m + "decode", ("task", "decode"), ("tokenize", "train")),
        ]


RECIPE = MTRecipe
