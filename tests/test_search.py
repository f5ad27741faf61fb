"""Tests for seqpipe.common.search: greedy and batched beam search.

A tiny model is trained once (module fixture, a few seconds) on the synthetic reverse task, so
search sees non-trivial distributions. Batched-vs-alone comparisons run in float64, where
rounding differences between batch shapes cannot flip a ranking.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

from seqpipe.common.search import beam_search, greedy_search, max_output_lengths
from seqpipe.models import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    DecoderCache,
    EncoderOutput,
    RecurrentDecoder,
    Seq2Seq,
    build_model,
    label_smoothed_nll,
)

torch.set_num_threads(1)  # tiny models: one thread is fastest and robust to a busy machine

VOCAB = 20  # ids 4..19 are symbols


def reverse_batch(
    gen: torch.Generator, n: int, lo: int = 3, hi: int = 8
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reverse task: src batch x hi (PAD after each length), tgt_in = BOS + reversed,
    tgt_out = reversed + EOS."""
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen)
    src = torch.full((n, hi), PAD_ID)
    tgt_in = torch.full((n, hi + 1), PAD_ID)
    tgt_out = torch.full((n, hi + 1), PAD_ID)
    for i, length in enumerate(lengths.tolist()):
        seq = torch.randint(4, VOCAB, (length,), generator=gen)
        rev = seq.flip(0)
        src[i, :length] = seq
        tgt_in[i, 0] = BOS_ID
        tgt_in[i, 1 : length + 1] = rev
        tgt_out[i, :length] = rev
        tgt_out[i, length] = EOS_ID
    return src, lengths, tgt_in, tgt_out


def mixed_sources(n: int, seed: int, lo: int = 1, hi: int = 10) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen)
    src = torch.randint(4, VOCAB, (n, hi), generator=gen)
    src[torch.arange(hi).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD_ID
    return src, lengths


@pytest.fixture(scope="module")
def trained() -> Seq2Seq:
    """GRU, Bahdanau attention with input feeding, trained 150 steps x 128 sentences on the
    reverse task (~5-8 s on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: more threads only add sync overhead
    try:
        torch.manual_seed(1)
        model = build_model(
            cell="gru",
            emb_size=16,
            hidden_size=32,
            attention="bahdanau",
            input_feeding=True,
            dropout=0.0,
            src_vocab_size=VOCAB,
            tgt_vocab_size=VOCAB,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(0)
        for _ in range(150):
            src, lengths, tgt_in, tgt_out = reverse_batch(gen, 128)
            loss, _, n_tokens = label_smoothed_nll(model(src, lengths, tgt_in), tgt_out, 0.0)
            optimizer.zero_grad()
            (loss / n_tokens).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def trained64(trained: Seq2Seq) -> Seq2Seq:
    """The trained model in float64 (a copy)."""
    return copy.deepcopy(trained).double().eval()


def assert_same_nbest(got: list, expected: list, where: str = "") -> None:
    assert [h for h, _ in got] == [h for h, _ in expected], where
    torch.testing.assert_close(
        torch.tensor([s for _, s in got], dtype=torch.float64),
        torch.tensor([s for _, s in expected], dtype=torch.float64),
    )


def scaled_random_model(seed: int, scale: float = 2.5, **kwargs: Any) -> Seq2Seq:
    """Untrained model with larger weights, so distributions are peaky and EOS is not
    immediate; float64."""
    torch.manual_seed(seed)
    config = dict(emb_size=8, hidden_size=12, dropout=0.0, tgt_vocab_size=VOCAB)
    config.update(kwargs)
    model = build_model(**config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.double().eval()


# --------------------------------------------------------------------------- greedy
def test_reverse_task_greedy_accuracy(trained: Seq2Seq) -> None:
    src, lengths, _, _ = reverse_batch(torch.Generator().manual_seed(123), 200)
    hyps = greedy_search(trained, src, lengths)
    refs = [src[i, :n].flip(0).tolist() for i, n in enumerate(lengths.tolist())]
    accuracy = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
    assert accuracy >= 0.95, f"reverse task sentence accuracy {accuracy:.2f}"
    beams = beam_search(trained, src, lengths, beam_size=4)
    beam_accuracy = sum(b[0][0] == r for b, r in zip(beams, refs, strict=True)) / len(refs)
    assert beam_accuracy >= accuracy - 0.02


def test_greedy_batched_equals_alone(trained64: Seq2Seq) -> None:
    src, lengths = mixed_sources(32, seed=5)
    batched = greedy_search(trained64, src, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert batched[i] == greedy_search(trained64, src[i : i + 1, :n], lengths[i : i + 1])[0]


# --------------------------------------------------------------------------- beam
def test_beam1_equals_greedy(trained64: Seq2Seq) -> None:
    src, lengths = mixed_sources(64, seed=3)
    greedy = greedy_search(trained64, src, lengths)
    beam = beam_search(trained64, src, lengths, beam_size=1, alpha=1.0)
    assert [b[0][0] for b in beam] == greedy


def test_beam1_equals_greedy_untrained_lstm() -> None:
    model = scaled_random_model(
        11, cell="lstm", attention="luong", input_feeding=False, src_vocab_size=VOCAB
    )
    src, lengths = mixed_sources(16, seed=4)
    greedy = greedy_search(model, src, lengths)
    assert any(len(g) > 2 for g in greedy), "model too trivial for the test"
    assert [b[0][0] for b in beam_search(model, src, lengths, beam_size=1)] == greedy


def test_beam_batched_equals_alone(trained64: Seq2Seq) -> None:
    src, lengths = mixed_sources(64, seed=1)
    batched = beam_search(trained64, src, lengths, beam_size=5, nbest=5)
    assert len(batched) == 64
    for i, n in enumerate(lengths.tolist()):
        alone = beam_search(trained64, src[i : i + 1, :n], lengths[i : i + 1], beam_size=5, nbest=5)
        assert_same_nbest(batched[i], alone[0], f"sentence {i}")


@pytest.mark.parametrize("query", ["previous", "current"])
def test_beam_batched_equals_alone_in_float32(trained: Seq2Seq, query: str) -> None:
    """Decoding runs in float32: padded batches must give the same hypotheses there too (scores
    within float32 rounding)."""
    if query == "previous":  # the trained Bahdanau model: the previous state queries
        model = trained
    else:
        model = scaled_random_model(
            5, scale=1.5, attention="bahdanau", attention_query="current", src_vocab_size=VOCAB
        ).float()
    src, lengths = mixed_sources(48, seed=9)
    batched = beam_search(model, src, lengths, beam_size=4, nbest=2)
    greedy = greedy_search(model, src, lengths)
    for i, n in enumerate(lengths.tolist()):
        one = (src[i : i + 1, :n], lengths[i : i + 1])
        alone = beam_search(model, *one, beam_size=4, nbest=2)[0]
        assert [h for h, _ in batched[i]] == [h for h, _ in alone], f"sentence {i}"
        torch.testing.assert_close(
            torch.tensor([s for _, s in batched[i]]),
            torch.tensor([s for _, s in alone]),
            atol=1e-4,
            rtol=1e-5,
        )
        assert greedy[i] == greedy_search(model, *one)[0], f"sentence {i}"


@pytest.mark.parametrize(
    "config",
    [
        dict(cell="lstm", attention="luong", input_feeding=False),
        dict(cell="gru", attention="luong", input_feeding=True, dec_layers=2),
        dict(cell="lstm", attention="bahdanau", input_feeding=False, bridge=False),
        dict(cell="gru", attention="bahdanau", input_feeding=True, attention_query="current"),
    ],
    ids=["lstm-luong-fast", "gru-luong-feed-2layer", "lstm-bahdanau-nobridge", "bahdanau-current"],
)
def test_beam_batched_equals_alone_configs(config: dict) -> None:
    model = scaled_random_model(7, src_vocab_size=VOCAB, **config)
    src, lengths = mixed_sources(12, seed=2)
    batched = beam_search(model, src, lengths, beam_size=4, nbest=2, alpha=0.6)
    for i, n in enumerate(lengths.tolist()):
        alone = beam_search(
            model, src[i : i + 1, :n], lengths[i : i + 1], beam_size=4, nbest=2, alpha=0.6
        )
        assert_same_nbest(batched[i], alone[0], f"sentence {i}")


def test_beam_location_attention_features() -> None:
    model = scaled_random_model(
        3, cell="lstm", attention="location", input_size=5, scale=1.5, enc_layers=2
    )
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 12, 5, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([12, 4, 9, 1, 7, 10])
    batched = beam_search(model, feats, lengths, beam_size=3, max_len_a=0.5, max_len_b=3)
    greedy = greedy_search(model, feats, lengths, max_len_a=0.5, max_len_b=3)
    assert [
        b[0][0] for b in beam_search(model, feats, lengths, beam_size=1, max_len_a=0.5, max_len_b=3)
    ] == greedy
    for i, n in enumerate(lengths.tolist()):
        alone = beam_search(
            model, feats[i : i + 1, :n], lengths[i : i + 1], beam_size=3, max_len_a=0.5, max_len_b=3
        )
        assert_same_nbest(batched[i], alone[0], f"utterance {i}")


def teacher_forced_logprob(model: Seq2Seq, src: Tensor, length: Tensor, hyp: list[int]) -> float:
    tgt_in = torch.tensor([[BOS_ID] + hyp])
    tgt_out = torch.tensor([hyp + [EOS_ID]])
    with torch.no_grad():
        lp = torch.log_softmax(model(src, length, tgt_in), dim=-1)
    return float(lp.gather(-1, tgt_out.unsqueeze(-1)).sum())


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_scores_are_length_normalised_logprobs(trained64: Seq2Seq, alpha: float) -> None:
    src, lengths = mixed_sources(6, seed=9)
    results = beam_search(trained64, src, lengths, beam_size=4, nbest=4, alpha=alpha)
    for i, nbest in enumerate(results):
        assert len(nbest) == 4
        scores = [s for _, s in nbest]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h) for h, _ in nbest}) == 4, "n-best hypotheses are distinct"
        for hyp, score in nbest:
            assert EOS_ID not in hyp and BOS_ID not in hyp and PAD_ID not in hyp
            raw = teacher_forced_logprob(trained64, src[i : i + 1], lengths[i : i + 1], hyp)
            penalty = ((5 + len(hyp) + 1) / 6) ** alpha
            assert score == pytest.approx(raw / penalty, abs=1e-9)


def test_max_length_forces_eos(trained64: Seq2Seq, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = trained64.decoder
    real_logits = decoder.step_logits

    def never_eos(real):
        def step(prev, state, cache):
            lp, state, w = real(prev, state, cache)
            lp[:, EOS_ID] -= 1e4  # EOS only when forced
            return lp, state, w

        return step

    monkeypatch.setattr(decoder, "step_logits", never_eos(real_logits))  # both searches
    src, lengths = mixed_sources(8, seed=6)
    limits = max_output_lengths(lengths, 1.5, 2).tolist()
    assert limits == [int(1.5 * n + 2) for n in lengths.tolist()]
    assert [len(h) for h in greedy_search(trained64, src, lengths, 1.5, 2)] == limits
    beams = beam_search(trained64, src, lengths, beam_size=3, max_len_a=1.5, max_len_b=2, nbest=3)
    assert [[len(h) for h, _ in b] for b in beams] == [[n] * 3 for n in limits]
    capped = greedy_search(trained64, src, lengths, 1.5, 2, max_len=4)
    assert [len(h) for h in capped] == [min(n, 4) for n in limits]


def test_finished_sentences_leave_the_batch(
    trained64: Seq2Seq, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = trained64.decoder
    rows: list[int] = []
    per_cache_row = [4]  # beam search: the beams of a sentence share its cache row

    def recording(real):
        def step(prev, state, cache):
            rows.append(prev.size(0))
            assert prev.size(0) == cache.keys.size(0) * per_cache_row[0]
            return real(prev, state, cache)

        return step

    monkeypatch.setattr(decoder, "step_logits", recording(decoder.step_logits))
    src, lengths = mixed_sources(32, seed=8, lo=1, hi=10)
    beam_search(trained64, src, lengths, beam_size=4)
    assert rows[0] == 32 * 4
    assert all(r % 4 == 0 for r in rows)
    assert rows == sorted(rows, reverse=True) and rows[-1] < rows[0] // 4
    rows.clear()
    per_cache_row[0] = 1
    greedy_search(trained64, src, lengths)
    assert rows[0] == 32 and rows == sorted(rows, reverse=True) and rows[-1] < 8


def test_encoder_keys_projected_once(trained64: Seq2Seq, monkeypatch: pytest.MonkeyPatch) -> None:
    attention = trained64.decoder.attention
    real = attention.project_keys
    calls = []

    def counting(memory):
        calls.append(memory.shape)
        return real(memory)

    monkeypatch.setattr(attention, "project_keys", counting)
    src, lengths = mixed_sources(10, seed=2)
    beam_search(trained64, src, lengths, beam_size=5)
    assert len(calls) == 1 and calls[0][0] == 10


# --------------------------------------------------------------------------- reference
class TableDecoder:
    """Search-interface decoder whose log-probs are a table lookup keyed by a hash of the
    prefix: exact in any batch shape, so search can be checked against a reference."""

    def __init__(self, table: Tensor) -> None:
        self.table = table  # codes x vocab, log-probs

    def prepare_cache(self, enc: EncoderOutput) -> DecoderCache:
        return DecoderCache(enc.outputs, enc.outputs, enc.mask)

    reorder_cache = staticmethod(RecurrentDecoder.reorder_cache)

    def init_state(self, enc: EncoderOutput) -> Tensor:
        return enc.hidden  # batch, long code

    @staticmethod
    def reorder_state(state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)

    def next_code(self, code: Tensor, prev: Tensor) -> Tensor:
        return (code * 7 + prev + 1) % self.table.size(0)

    def step(self, prev: Tensor, state: Tensor, cache: DecoderCache):
        code = self.next_code(state, prev)
        return self.table[code].clone(), code, cache.mask.double()

    step_logits = step  # log-probs are logits too


class TableModel:
    def __init__(self, codes: int = 997, vocab: int = 12, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        logits = 2.0 * torch.randn(codes, vocab, generator=gen, dtype=torch.float64)
        self.decoder = TableDecoder(torch.log_softmax(logits, dim=-1))

    def encode(self, src: Tensor, src_len: Tensor) -> EncoderOutput:
        code = (src.sum(dim=1) * 13 + src_len) % self.decoder.table.size(0)
        mask = torch.arange(src.size(1)).unsqueeze(0) < src_len.unsqueeze(1)
        return EncoderOutput(src.unsqueeze(-1).double(), mask, src_len, code)


def reference_beam(
    model: TableModel, src: Tensor, length: int, k: int, alpha: float, limit: int
) -> list[tuple[list[int], float]]:
    """One sentence, plain Python, the documented algorithm."""
    dec = model.decoder
    code0 = int(model.encode(src.unsqueeze(0), torch.tensor([length])).hidden[0])
    beams = [([], 0.0, code0, BOS_ID)]  # tokens, score, code, previous token
    finished: list[tuple[list[int], float]] = []
    for t in range(limit + 1):
        cands = []
        for tokens, score, code, prev in beams:
            new_code = int(dec.next_code(torch.tensor(code), torch.tensor(prev)))
            lp = dec.table[new_code].tolist()
            for v, value in enumerate(lp):
                if v in (PAD_ID, BOS_ID) or (t == limit and v != EOS_ID):
                    continue
                cands.append((score + value, tokens, new_code, v))
        cands.sort(key=lambda c: -c[0])
        top = cands[: 2 * k]
        for score, tokens, _, v in top[:k]:
            if v == EOS_ID:
                finished.append((tokens, score / ((5 + t + 1) / 6) ** alpha))
        if len(finished) >= k or t == limit:
            break
        beams = [(tokens + [v], score, c, v) for score, tokens, c, v in top if v != EOS_ID][:k]
    return sorted(finished, key=lambda h: -h[1])


@pytest.mark.parametrize("k,alpha", [(1, 1.0), (3, 0.0), (5, 1.0), (4, 0.6)])
def test_beam_matches_reference_implementation(k: int, alpha: float) -> None:
    model = TableModel()
    src, lengths = mixed_sources(40, seed=k)
    limits = max_output_lengths(lengths, 1.0, 3).tolist()
    got = beam_search(
        model, src, lengths, beam_size=k, alpha=alpha, max_len_a=1.0, max_len_b=3, nbest=k
    )
    long_ones = 0
    for i, n in enumerate(lengths.tolist()):
        expected = reference_beam(model, src[i, :n], n, k, alpha, limits[i])[:k]
        assert_same_nbest(got[i], expected, f"sentence {i}")
        long_ones += max(len(h) for h, _ in expected) >= 3
    assert long_ones > 10, "table model too trivial"


def test_greedy_matches_reference() -> None:
    model = TableModel(seed=1)
    src, lengths = mixed_sources(40, seed=0)
    limits = max_output_lengths(lengths, 1.0, 3).tolist()
    got = greedy_search(model, src, lengths, max_len_a=1.0, max_len_b=3)
    for i, n in enumerate(lengths.tolist()):
        assert got[i] == reference_beam(model, src[i, :n], n, 1, 0.0, limits[i])[0][0]


# --------------------------------------------------------------------------- prefix scorer
class CheckingScorer:
    """Dummy prefix scorer: its state is each row's sum of prefix tokens (checked against the
    prefixes, so wrong row selection fails), and it bans one token."""

    def __init__(self, banned: int) -> None:
        self.banned = banned
        self.calls = 0

    def init(self, enc) -> Tensor:
        return torch.zeros(enc.lengths.size(0), dtype=torch.long)

    def score(
        self, prefixes: Tensor, state: Tensor, candidate_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        self.calls += 1
        assert torch.equal(state, prefixes.sum(dim=1)), "scorer state out of sync with prefixes"
        scores = torch.zeros(candidate_ids.shape, dtype=torch.float64)
        scores[candidate_ids == self.banned] = -1e4
        new_states = (state.unsqueeze(1) + candidate_ids).view(-1)  # rows*K, row-major
        return scores, new_states

    def select(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)


def test_prefix_scorer_hook(trained64: Seq2Seq) -> None:
    src, lengths = mixed_sources(16, seed=12, lo=3)
    plain = beam_search(trained64, src, lengths, beam_size=3, nbest=3)
    banned = max(range(4, VOCAB), key=lambda v: sum(h.count(v) for b in plain for h, _ in b))
    scorer = CheckingScorer(banned)
    # weight 0 and a pre-beam of 2*beam: exactly the plain search
    same = beam_search(
        trained64,
        src,
        lengths,
        beam_size=3,
        nbest=3,
        prefix_scorer=scorer,
        ctc_weight=0.0,
        pre_beam_size=6,
    )
    assert scorer.calls > 0
    assert [[h for h, _ in b] for b in same] == [[h for h, _ in b] for b in plain]
    joint = beam_search(
        trained64, src, lengths, beam_size=3, nbest=3, prefix_scorer=scorer, ctc_weight=0.3
    )
    assert all(banned not in h for b in joint for h, _ in b)


# --------------------------------------------------------------------------- int8
def test_int8_quantized_model_searches(trained: Seq2Seq) -> None:
    """decode.quantize=int8: Linear and GRU weights become int8 (torch.ao dynamic
    quantization); search still solves the task, and the shortlist's output-layer subset of
    the quantized layer gives exactly the full quantized layer's columns."""
    from seqpipe.common.checkpoint import quantize_int8
    from seqpipe.errors import InputError

    q = quantize_int8(copy.deepcopy(trained))
    assert "DynamicQuantizedLinear" in repr(q.decoder.output_layer)
    assert "DynamicQuantizedGRU" in repr(q.encoder.rnn)
    src, lengths, _, _ = reverse_batch(torch.Generator().manual_seed(123), 200)
    refs = [src[i, :n].flip(0).tolist() for i, n in enumerate(lengths.tolist())]
    for hyps in (greedy_search(q, src, lengths), [b[0][0] for b in beam_search(q, src, lengths)]):
        accuracy = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
        assert accuracy >= 0.9, f"int8 reverse task sentence accuracy {accuracy:.2f}"
    x = torch.randn(7, 32)
    ids = torch.tensor([2, 5, 6, 11, 19])
    project = q.decoder.subset_projection(ids)
    torch.testing.assert_close(
        project(x, torch.zeros(7, 5)), q.decoder.output_layer(x)[:, ids], rtol=0, atol=0
    )
    with pytest.raises(InputError, match="decode.quantize"):
        quantize_int8(copy.deepcopy(trained), "cuda")


# --------------------------------------------------------------------------- golden
def test_golden_beam_output() -> None:
    """Seeded untrained model: exact hypotheses computed once (accidental change detector)."""
    model = scaled_random_model(21, cell="gru", attention="bahdanau", src_vocab_size=VOCAB)
    src, lengths = mixed_sources(3, seed=21)
    out = beam_search(model, src, lengths, beam_size=3, nbest=2)
    got = [[(h, round(s, 4)) for h, s in b] for b in out]
    assert got == GOLDEN_BEAM


# beam 3, nbest 2, alpha 1 (torch 2.9.1, CPU, float64); scores rounded to 4 decimals
GOLDEN_BEAM = [
    [
        ([14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14], -7.6654),
        ([14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 7], -7.8634),
    ],
    [
        ([11, 5, 15, 5, 15, 5, 18, 18, 17, 17, 17], -7.5169),
        ([11, 5, 15, 5, 18, 18, 17, 17, 10, 17, 17], -7.6825),
    ],
    [
        ([1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5], -8.7863),
        ([1, 5, 5, 18, 10, 10, 10, 17, 17, 10, 10, 10, 10, 10, 10], -8.8094),
    ],
]


# --------------------------------------------------------------------------- attention
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_attention_of_the_reverse_task_is_the_anti_diagonal(trained: Seq2Seq, search: str) -> None:
    src, lengths, _, _ = reverse_batch(torch.Generator().manual_seed(7), 64)
    att: list[list[Tensor]] = []
    if search == "greedy":
        hyps = [[h] for h in greedy_search(trained, src, lengths, attention=att)]
    else:
        hyps = [[h for h, _ in b] for b in beam_search(trained, src, lengths, 4, 2, attention=att)]
    on, total = 0, 0
    for i, n in enumerate(lengths.tolist()):
        assert len(att[i]) == len(hyps[i])
        for h, a in zip(hyps[i], att[i], strict=True):
            assert a.shape == (len(h), n)
            torch.testing.assert_close(a.sum(1), torch.ones(len(h)))
        a = att[i][0]
        if hyps[i][0] == src[i, :n].flip(0).tolist():
            on += sum(int(a[j].argmax()) == n - 1 - j for j in range(n))
            total += n
    assert total > 0 and on / total >= 0.9, f"{on}/{total} tokens attend to their source"


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_attention_batched_equals_alone(trained: Seq2Seq, search: str) -> None:
    src, lengths = mixed_sources(24, seed=8)
    kw: dict[str, Any] = {} if search == "greedy" else {"beam_size": 3, "nbest": 2}
    fn = greedy_search if search == "greedy" else beam_search
    batched: list[list[Tensor]] = []
    fn(trained, src, lengths, attention=batched, **kw)
    for i, n in enumerate(lengths.tolist()):
        alone: list[list[Tensor]] = []
        fn(trained, src[i : i + 1, :n], lengths[i : i + 1], attention=alone, **kw)
        for a, b in zip(batched[i], alone[0], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
