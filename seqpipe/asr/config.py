"""The ASR recipe: its sections and its stages.

``prepare → features → train → decode → score``; the features stage also builds the target
vocabulary (``tokenize:``). Each stage's key hashes what it reads and its upstream keys.
Torch-free: ``seqpipe status`` and ``seqpipe config`` load it without torch.
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
from seqpipe.core.schema import Section, newkey, nokey
from seqpipe.core.stage import CHECKPOINTS, StageSpec
from seqpipe.data.registry import data_fingerprint, extra_speaker_digest
from seqpipe.data.synth import engine_version

DATASETS = (
    *("yesno", "fsdd_digits", "fsdd_connected", "an4", "librispeech", "librispeech_100h"),
    *("kaldi", "tsv"),
)
METRICS = ("wer", "cer")


class ASRDataConfig(DataConfig):
    # registry name (yesno, fsdd_digits, fsdd_connected, an4, librispeech) or a local corpus (kaldi,
    # tsv, librispeech with data.path)
    dataset: Literal[DATASETS] = "yesno"
    sample_rate: int = Field(16000, ge=1000)  # audio is resampled to this rate
    # a corrupt/missing audio file or empty transcript: skip or stop
    on_error: Literal["skip", "stop"] = "stop"
    path: str | None = None  # kaldi folder / tsv file / librispeech folder
    test_speakers: list[str] = Field(default_factory=list)  # fsdd_connected
    valid_speakers: list[str] = Field(default_factory=list)  # fsdd_connected
    # fsdd_connected: utterances per split (+ ``synthetic``: training utterances spoken by the
    # synthetic voices)
    utterances: dict[str, int] = Field(
        default_factory=lambda: {"train": 2000, "valid": 200, "test": 300}
    )
    # fsdd_connected: eSpeak NG voices (accent + variant) that speak digits for training only
    synthetic_voices: int = newkey(0, ge=0)
    synthetic_takes: int = newkey(10, ge=1)  # recordings of each digit per synthetic voice
    # fsdd_digits / fsdd_connected: FSDD speakers that the mirror's tarball leaves out (lucas),
    # fetched file by file from FSDD's upstream commit (data/registry.yaml), or speechcommands
    # (Speech Commands' digit clips, many voices under one name); they train unless named in
    # test_speakers / valid_speakers
    extra_speakers: list[str] = newkey([])
    # fsdd_digits / fsdd_connected: speakers in no split (nested validation: bench/asr_loso.py
    # keeps a fold's test voice out of the models that choose its settings)
    exclude_speakers: list[str] = newkey([])

    @model_validator(mode="after")
    def _synthetic(self) -> ASRDataConfig:
        unknown = set(self.utterances) - {"train", "valid", "test", "synthetic"}
        if unknown:
            raise ValueError(f"utterances: unknown split(s) {sorted(unknown)}")
        if bool(self.synthetic_voices) != bool(self.utterances.get("synthetic", 0)):
            raise ValueError("synthetic_voices and utterances.synthetic: set both (> 0) or neither")
        if self.synthetic_voices and self.dataset != "fsdd_connected":
            raise ValueError("synthetic_voices: only for dataset fsdd_connected")
        for key in ("extra_speakers", "exclude_speakers"):
            if getattr(self, key) and self.dataset not in ("fsdd_digits", "fsdd_connected"):
                raise ValueError(f"{key}: only for datasets fsdd_digits, fsdd_connected")
        return self


class FeaturesConfig(Section):
    kind: Literal["fbank"] = "fbank"  # Kaldi log-mel filterbank
    num_mel_bins: int = Field(80, ge=8)
    speed_perturb: list[float] = Field(default_factory=lambda: [1.0])
    cmvn: bool = True  # global mean/variance normalisation (training stats)
    # also subtract each utterance's own mean (speaker/channel robustness)
    utterance_cmn: bool = False
    # subtract each utterance's mean and divide by its std (implies cmn)
    utterance_cvn: bool = False
    # subtract each speaker's mean over all its utterances of the split (Kaldi's per-speaker CMN; a
    # speed-perturbed copy counts as its own speaker) in every split (all) or in the valid/test
    # splits only (eval: training keeps utterance_cmn)
    speaker_cmn: Literal["none", "all", "eval"] = "none"
    # VTLP: warp each training copy's filterbank by a factor in [1-v, 1+v]
    vtlp: float = Field(0.0, ge=0, lt=0.5)
    # [lo, hi] dB: white noise this far below each training copy's loudest frame, a level per copy
    # drawn uniformly (null = off)
    noise_snr: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _noise_range(self) -> FeaturesConfig:
        if any(s <= 0 for s in self.speed_perturb):
            raise ValueError(f"speed_perturb: factors must be > 0, got {self.speed_perturb}")
        if self.noise_snr is not None and self.noise_snr[0] > self.noise_snr[1]:
            raise ValueError(f"noise_snr: [lo, hi] needs lo <= hi, got {list(self.noise_snr)}")
        if self.speaker_cmn == "all" and (self.utterance_cmn or self.utterance_cvn):
            raise ValueError(
                "speaker_cmn: all replaces utterance_cmn/utterance_cvn in every split: set "
                "only one of them (or speaker_cmn: eval, which keeps them for training)"
            )
        return self

    workers: int = nokey(2)  # feature extraction worker processes


class ASRModelConfig(ModelConfig):
    arch: Literal["attention", "ctc", "ctc_attention"] = "attention"
    # conv2d: x4 fewer frames; conv2d8: conv2d + pairs of frames stacked (x8); pyramid:
    # pyramidal BiLSTM encoder (x2 per layer, up to x4); none
    subsampling: Literal["conv2d", "conv2d8", "pyramid", "none"] = "conv2d"
    conv_channels: int = Field(32, ge=1)
    frontend_norm: bool = False  # LayerNorm on the conv front end's output frames

    @model_validator(mode="after")
    def _pyramid(self) -> ASRModelConfig:
        if self.subsampling == "pyramid" and (self.enc_layers < 2 or not self.bidirectional):
            raise ValueError(
                "model.subsampling: pyramid needs model.enc_layers >= 2 and bidirectional: true"
            )
        return self


class ASRTrainConfig(TrainConfig):
    valid_metric: Literal["wer", "loss"] = "wer"
    ctc_weight: float = Field(0.3, ge=0, le=1)  # ctc_attention: weight of the CTC loss
    spec_augment: bool = True
    # arch ctc: train this many models (train.seed, +1, ...) and decode them as an ensemble (each
    # member's hypothesis rescored by all members' CTC likelihoods); the attention archs train one
    # model and say so
    members: int = newkey(1, ge=1)
    member_jobs: int | None = nokey(None)  # members trained at once, one process each (null: all)


class ASRDecodeConfig(DecodeConfig):
    # auto picks by model.arch (ctc → ctc_greedy, attention → beam, ctc_attention → joint)
    search: Literal[SEARCHES["asr"]] = "beam"  # type: ignore[valid-type]
    ctc_weight: float = Field(0.3, ge=0, le=1)  # joint: weight of the CTC prefix score
    # unsupervised speaker adaptation. lin: after a first pass, per speaker of the split a linear
    # input transform (features x A + b, A from the identity; fMLLR-like) is trained on that
    # speaker's first-pass transcripts with the model's own loss, the model frozen, then a second
    # pass decodes through it. Uses the speaker's audio, never its references
    adapt: Literal["none", "lin"] = newkey("none")
    adapt_epochs: int = newkey(10, ge=1)  # lin: passes over the speaker's utterances
    adapt_lr: float = newkey(0.003, gt=0)  # lin: Adam learning rate
    # lin: adapt-then-decode rounds; each starts from the identity again with the last round's
    # transcripts
    adapt_rounds: int = newkey(1, ge=1)
    # lin with an ensemble (train.members): agreed = train only on the utterances where every
    # member's own hypothesis equals the ensemble's; majority = where more than half of them do
    # (2 members: as agreed); all = every utterance (one model: all)
    adapt_targets: Literal["agreed", "majority", "all"] = newkey("agreed")
    # lin: weight of the token prior term (0: none): each update also pulls the
    # speaker's share of each token towards the training transcripts' (class-balanced
    # self-training: an accent's systematic confusions are not reinforced)
    adapt_prior: float = newkey(0.0, ge=0)
    # lin: weight of the confidence penalty (0: none): each update also rewards the posteriors'
    # mean entropy, so the transform does not grow sure of the pseudo-labels' errors
    adapt_confidence_penalty: float = newkey(0.0, ge=0)

    @model_validator(mode="after")
    def _adapt_needs_gradients(self) -> ASRDecodeConfig:
        if self.adapt != "none" and self.quantize != "none":
            raise ValueError("decode.adapt: adapting needs gradients; set decode.quantize: none")
        return self


class ASRScoreConfig(Section):
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: list(METRICS))  # type: ignore[valid-type]
    asr_normalization: str = "lower,strip_punct,collapse_space"


class ASRRecipe(Recipe):
    task: Literal["asr"] = "asr"
    data: ASRDataConfig = Field(default_factory=ASRDataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    model: ASRModelConfig = Field(default_factory=ASRModelConfig)
    train: ASRTrainConfig = Field(default_factory=ASRTrainConfig)
    decode: ASRDecodeConfig = Field(default_factory=ASRDecodeConfig)
    score: ASRScoreConfig = Field(default_factory=ASRScoreConfig)

    @model_validator(mode="after")
    def _decodable(self) -> ASRRecipe:
        check_recipe_decode(self)
        return self

    def data_fingerprint(self) -> Any:
        fingerprint = data_fingerprint(self)
        if self.data.synthetic_voices:  # the synthesiser's build makes the samples
            fingerprint["synthesizer"] = engine_version()
        for speaker in self.data.extra_speakers:  # their files' list names every checksum
            fingerprint[f"extra_speakers.{speaker}"] = extra_speaker_digest("fsdd", speaker)
        return fingerprint

    def task_stages(self, m: str) -> list[StageSpec]:
        # validation decodes (attention arch: greedily, with decode's length limits) and
        # scores with score's normalisation; adapting to each speaker (decode.adapt) reads the
        # speakers from the prepare manifest
        valid = ("decode.max_len_a", "decode.max_len_b", "score.asr_normalization")
        speakers = ("prepare",) if self.decode.adapt != "none" else ()
        return [
            StageSpec(
                "features",
                2,
                m + "features",
                ("task", "seed", "features", "tokenize"),
                ("prepare",),
            ),
            StageSpec(
                "train",
                2,
                m + "train",
                ("task", "seed", "model", "train", *valid),
                ("features",),
                resumable=True,
                scratch=CHECKPOINTS,
            ),
            StageSpec(
                "decode", 2, m + "decode", ("task", "decode"), ("features", "train") + speakers
            ),
        ]


RECIPE = ASRRecipe
