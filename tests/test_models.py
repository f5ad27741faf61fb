"""Unit tests for seqpipe.models: encoder, attention, decoder, Seq2Seq, loss.

Tiny seeded models (vocab 20, hidden 8-16), CPU only, a few seconds in all.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqpipe.models import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    BahdanauAttention,
    LocationAwareAttention,
    LuongAttention,
    RecurrentEncoder,
    Seq2Seq,
    build_model,
    count_parameters,
    label_smoothed_nll,
)

torch.set_num_threads(1)  # tiny models: one thread is fastest and robust to a busy machine

VOCAB = 20
LENGTHS = [7, 3, 5, 1, 6, 2]
TOL = dict(rtol=1e-5, atol=1e-6)


def random_source(lengths: list[int], seed: int = 0, vocab: int = VOCAB) -> tuple[Tensor, Tensor]:
    """Token ids batch x max_len with *random non-pad junk* after each length: padding content
    must not matter to a packed encoder."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    return src, torch.tensor(lengths)


def random_target(batch: int, length: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randint(4, VOCAB, (batch, length), generator=g)
    tgt[:, 0] = BOS_ID
    tgt[0, length - 2 :] = PAD_ID  # a padded target row
    return tgt


def test_special_ids() -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)


# --------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_batched_equals_alone(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    enc = RecurrentEncoder(cell, None, 8, 2, bidirectional, 0.0, vocab_size=VOCAB, emb_size=6)
    enc.eval()
    src, lengths = random_source(LENGTHS)
    out = enc(src, lengths)
    d = 16 if bidirectional else 8
    assert out.outputs.shape == (len(LENGTHS), max(LENGTHS), d)
    assert out.hidden.shape == (len(LENGTHS), d)
    assert out.mask.tolist() == [[j < n for j in range(max(LENGTHS))] for n in LENGTHS]
    assert out.lengths.tolist() == LENGTHS
    for i, n in enumerate(LENGTHS):
        alone = enc(src[i : i + 1, :n], lengths[i : i + 1])
        torch.testing.assert_close(out.outputs[i, :n], alone.outputs[0], **TOL)
        torch.testing.assert_close(out.hidden[i], alone.hidden[0], **TOL)
        assert torch.all(out.outputs[i, n:] == 0), "padded positions must be exactly zero"


def test_encoder_hidden_is_last_layer_final_states() -> None:
    torch.manual_seed(0)
    enc = RecurrentEncoder("gru", None, 8, 2, True, 0.0, vocab_size=VOCAB, emb_size=6).eval()
    src, lengths = random_source([5])
    out = enc(src, lengths)
    # forward direction ends at the last real step, backward direction at the first
    torch.testing.assert_close(out.hidden[0, :8], out.outputs[0, 4, :8])
    torch.testing.assert_close(out.hidden[0, 8:], out.outputs[0, 0, 8:])


class HalvingFrontend(nn.Module):
    """Stand-in for the conv subsampler: linear projection + keep every 2nd frame."""

    def __init__(self, input_size: int, output_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, output_size)
        self.output_size = output_size

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.proj(x[:, ::2]), (lengths + 1) // 2


def test_encoder_feature_input_with_frontend() -> None:
    torch.manual_seed(0)
    enc = RecurrentEncoder("lstm", 5, 8, 1, True, 0.0, frontend=HalvingFrontend(5, 7)).eval()
    assert enc.input_size == 7
    feats = torch.randn(3, 9, 5)
    lengths = torch.tensor([9, 4, 6])
    out = enc(feats, lengths)
    assert out.lengths.tolist() == [5, 2, 3]
    assert out.outputs.shape == (3, 5, 16)
    for i, n in enumerate(lengths.tolist()):
        alone = enc(feats[i : i + 1, :n], lengths[i : i + 1])
        m = int(out.lengths[i])
        torch.testing.assert_close(out.outputs[i, :m], alone.outputs[0], **TOL)


def test_encoder_plain_features() -> None:
    enc = RecurrentEncoder("gru", 4, 8, 1, False, 0.0)
    out = enc(torch.randn(2, 6, 4), torch.tensor([6, 3]))
    assert out.outputs.shape == (2, 6, 8) and out.mask.sum().item() == 9


def test_encoder_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown RNN cell"):
        RecurrentEncoder("transformer", 4, 8)
    with pytest.raises(ValueError):
        RecurrentEncoder("gru", None, 8)


# --------------------------------------------------------------------------- attention
def _memory(batch: int = 3, src: int = 5, size: int = 6) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    values = torch.randn(batch, src, size)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] * 4 + [False]])
    return values, mask


@pytest.mark.parametrize(
    "attention",
    [
        lambda: BahdanauAttention(4, 6, 5),
        lambda: LuongAttention(4, 6, "general"),
        lambda: LuongAttention(6, 6, "dot"),
    ],
    ids=["bahdanau", "luong-general", "luong-dot"],
)
def test_attention_all_steps_equal_stepwise(attention) -> None:
    attn = attention()
    values, mask = _memory()
    q_size = 6 if isinstance(attn, LuongAttention) and attn.score == "dot" else 4
    query = torch.randn(3, 4, q_size)  # batch x steps x query
    keys = attn.project_keys(values)
    context, weights = attn(query, keys, values, mask)
    assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 5)
    for t in range(4):
        c_t, w_t = attn(query[:, t], keys, values, mask)
        torch.testing.assert_close(c_t, context[:, t], **TOL)
        torch.testing.assert_close(w_t, weights[:, t], **TOL)
    assert torch.all(weights.masked_select(~mask.unsqueeze(1).expand_as(weights)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))


def test_luong_dot_needs_equal_sizes() -> None:
    with pytest.raises(ValueError, match="dot"):
        LuongAttention(4, 6, "dot")
    with pytest.raises(ValueError):
        LuongAttention(4, 6, "concat")


def test_location_attention() -> None:
    torch.manual_seed(0)
    attn = LocationAwareAttention(4, 6, 5, conv_channels=3, conv_kernel=5)
    values, mask = _memory()
    keys = attn.project_keys(values)
    prev = LocationAwareAttention.initial_weights(mask)
    torch.testing.assert_close(prev.sum(-1), torch.ones(3))
    query = torch.randn(3, 4)
    context, weights = attn(query, keys, values, mask, prev)
    assert context.shape == (3, 6) and weights.shape == (3, 5)
    assert torch.all(weights[~mask] == 0)
    # the previous weights matter
    other = torch.zeros_like(prev)
    other[:, 0] = 1.0
    _, weights2 = attn(query, keys, values, mask, other)
    assert not torch.allclose(weights, weights2)
    # a group of queries sharing a memory row (beams) == each query with its own copy
    group_q = torch.randn(3, 2, 4)
    group_prev = torch.stack([prev, other], dim=1)  # 3 x 2 x src
    ctx_g, w_g = attn(group_q, keys, values, mask, group_prev)
    rep = torch.arange(3).repeat_interleave(2)
    ctx_r, w_r = attn(
        group_q.reshape(6, 4), keys[rep], values[rep], mask[rep], group_prev.reshape(6, -1)
    )
    torch.testing.assert_close(ctx_g.reshape(6, -1), ctx_r)
    torch.testing.assert_close(w_g.reshape(6, -1), w_r)
    with pytest.raises(ValueError, match="prev_weights"):
        attn(query, keys, values, mask)


# --------------------------------------------------------------------------- decoder
DECODER_CONFIGS = [
    # (attention, luong_score, input_feeding)
    ("bahdanau", "general", True),
    ("bahdanau", "general", False),
    ("luong", "general", True),
    ("luong", "general", False),  # fast path
    ("luong", "dot", False),  # fast path
    ("luong", "dot", True),
    ("location", "general", True),
    ("location", "general", False),
]


def tiny_model(
    cell: str = "gru",
    attention: str = "bahdanau",
    luong_score: str = "general",
    input_feeding: bool = True,
    bridge: bool = True,
    layers: int = 2,
    seed: int = 0,
    attention_query: str = "auto",
) -> Seq2Seq:
    torch.manual_seed(seed)
    return build_model(
        cell=cell,
        emb_size=6,
        hidden_size=8,
        enc_layers=layers,
        dec_layers=layers,
        bidirectional=luong_score != "dot",  # dot needs enc size == dec size
        attention=attention,
        luong_score=luong_score,
        input_feeding=input_feeding,
        bridge=bridge,
        dropout=0.1,
        src_vocab_size=VOCAB,
        tgt_vocab_size=VOCAB,
        attention_query=attention_query,
    )


def step_by_step_log_probs(model: Seq2Seq, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> Tensor:
    """Teacher-forced log-probs through the search interface: batch x tgt_len x vocab."""
    dec = model.decoder
    enc = model.encode(src, lengths)
    cache = dec.prepare_cache(enc)
    state = dec.init_state(enc)
    out = []
    for t in range(tgt_in.size(1)):
        lp, state, weights = dec.step(tgt_in[:, t], state, cache)
        assert weights.shape == (src.size(0), enc.outputs.size(1))
        out.append(lp)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention,luong_score,input_feeding", DECODER_CONFIGS)
def test_forward_equals_step(
    cell: str, attention: str, luong_score: str, input_feeding: bool
) -> None:
    model = tiny_model(cell, attention, luong_score, input_feeding).eval()
    assert model.decoder.fast_path == (attention == "luong" and not input_feeding)
    src, lengths = random_source(LENGTHS)
    tgt_in = random_target(len(LENGTHS), 6)
    with torch.no_grad():
        logits = model(src, lengths, tgt_in)
        stepped = step_by_step_log_probs(model, src, lengths, tgt_in)
    assert logits.shape == (len(LENGTHS), 6, VOCAB)
    torch.testing.assert_close(F.log_softmax(logits, dim=-1), stepped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "attention,query,input_feeding,rnn_input",
    [
        ("bahdanau", "current", True, 6 + 8),  # Joey NMT's order: emb + attentional vector
        ("bahdanau", "current", False, 6),
        ("bahdanau", "previous", True, 6 + 16 + 8),  # + the context (encoder size 16)
        ("luong", "previous", False, 6 + 16),  # not the fast path any more
        ("location", "current", True, 6 + 8),
    ],
)
def test_attention_query_order(attention: str, query: str, input_feeding: bool, rnn_input: int):
    model = tiny_model("gru", attention, "general", input_feeding, attention_query=query).eval()
    dec = model.decoder
    assert dec.attend_first == (query == "previous") and not dec.fast_path
    assert dec.rnn.input_size == rnn_input
    src, lengths = random_source(LENGTHS)
    tgt_in = random_target(len(LENGTHS), 6)
    with torch.no_grad():
        logits = model(src, lengths, tgt_in)
        stepped = step_by_step_log_probs(model, src, lengths, tgt_in)
        alone = model(src[:1, : int(lengths[0])], lengths[:1], tgt_in[:1])
    torch.testing.assert_close(F.log_softmax(logits, dim=-1), stepped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[:1], alone, rtol=1e-5, atol=1e-5)  # batch-independent
    with pytest.raises(ValueError, match="attention_query"):
        tiny_model(attention_query="sideways")


@pytest.mark.parametrize("bridge", [True, False])
def test_bridge(bridge: bool) -> None:
    model = tiny_model("lstm", bridge=bridge, layers=2).eval()
    src, lengths = random_source(LENGTHS)
    enc = model.encode(src, lengths)
    h, c = model.decoder.init_state(enc).hidden
    assert h.shape == (2, len(LENGTHS), 8)
    if bridge:
        expected = torch.tanh(model.decoder.bridge_layer(enc.hidden))
        torch.testing.assert_close(h[0], expected)
        torch.testing.assert_close(h[1], expected)
    else:
        assert torch.all(h == 0) and torch.all(c == 0)


def test_fast_path_has_no_python_time_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("gru", "luong", "general", input_feeding=False).eval()
    src, lengths = random_source(LENGTHS)
    tgt_in = random_target(len(LENGTHS), 6)
    calls = {"rnn": 0}

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast path must not call the per-step function")

    rnn_forward = model.decoder.rnn.forward

    def counting(*args, **kwargs):
        calls["rnn"] += 1
        return rnn_forward(*args, **kwargs)

    monkeypatch.setattr(model.decoder, "_step", forbidden)
    monkeypatch.setattr(model.decoder.rnn, "forward", counting)
    logits = model(src, lengths, tgt_in)
    assert logits.shape == (len(LENGTHS), 6, VOCAB)
    assert calls["rnn"] == 1, "one RNN call over the whole target"

    slow = tiny_model("gru", "luong", "general", input_feeding=True).eval()
    monkeypatch.setattr(slow.decoder, "_forward_fast", forbidden)
    slow(src, lengths, tgt_in)  # loops, never takes the fast path


def test_decoder_reorder_state_and_cache() -> None:
    model = tiny_model("lstm", "location", input_feeding=True).eval()
    src, lengths = random_source(LENGTHS)
    dec = model.decoder
    enc = model.encode(src, lengths)
    cache, state = dec.prepare_cache(enc), dec.init_state(enc)
    prev = torch.full((len(LENGTHS),), BOS_ID)
    lp, state, _ = dec.step(prev, state, cache)
    index = torch.tensor([4, 4, 0, 2])
    lp_sel, _, w_sel = dec.step(
        prev[index], dec.reorder_state(state, index), dec.reorder_cache(cache, index)
    )
    lp_all, _, w_all = dec.step(prev, state, cache)
    torch.testing.assert_close(lp_sel, lp_all[index], **TOL)
    torch.testing.assert_close(w_sel, w_all[index], **TOL)


def test_tied_embeddings() -> None:
    model = build_model(
        emb_size=8, hidden_size=8, tied_embeddings=True, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB
    )
    assert model.decoder.output_layer.weight is model.decoder.embedding.weight
    untied = build_model(emb_size=8, hidden_size=8, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
    assert count_parameters(untied) - count_parameters(model) == VOCAB * 8
    with pytest.raises(ValueError, match="tied_embeddings"):
        build_model(
            emb_size=6,
            hidden_size=8,
            tied_embeddings=True,
            src_vocab_size=VOCAB,
            tgt_vocab_size=VOCAB,
        )


def test_dropout_only_in_training() -> None:
    model = tiny_model(attention="luong", input_feeding=False)
    src, lengths = random_source(LENGTHS)
    tgt_in = random_target(len(LENGTHS), 6)
    model.train()
    assert not torch.allclose(model(src, lengths, tgt_in), model(src, lengths, tgt_in))
    model.eval()
    torch.testing.assert_close(model(src, lengths, tgt_in), model(src, lengths, tgt_in))


# --------------------------------------------------------------------------- builder, loss
def test_build_model_validates_source() -> None:
    with pytest.raises(ValueError, match="src_vocab_size"):
        build_model(tgt_vocab_size=VOCAB)
    with pytest.raises(ValueError, match="src_vocab_size"):
        build_model(src_vocab_size=VOCAB, input_size=40, tgt_vocab_size=VOCAB)
    with pytest.raises(ValueError, match="attention"):
        build_model(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, attention="multihead")


def test_build_asr_model() -> None:
    torch.manual_seed(0)
    model = build_model(
        cell="lstm",
        hidden_size=8,
        emb_size=6,
        attention="location",
        input_size=5,
        frontend=HalvingFrontend(5, 7),
        tgt_vocab_size=VOCAB,
    )
    assert model.encoder.embedding is None and model.encoder.frontend is not None
    logits = model(torch.randn(2, 9, 5), torch.tensor([9, 5]), random_target(2, 4))
    assert logits.shape == (2, 4, VOCAB)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_label_smoothed_nll() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, VOCAB)
    target = torch.randint(4, VOCAB, (3, 4))
    target[0, 2:] = PAD_ID
    loss, nll, n = label_smoothed_nll(logits, target, 0.0)
    ref = F.cross_entropy(
        logits.view(-1, VOCAB), target.view(-1), ignore_index=PAD_ID, reduction="sum"
    )
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, ref)
    assert int(n) == 10
    loss_s, nll_s, _ = label_smoothed_nll(logits, target, 0.1)
    torch.testing.assert_close(nll_s, ref)
    # reference: smoothed distribution with 0.9 on the target and 0.1 over the 19 non-pad ids
    q = torch.full((3, 4, VOCAB), 0.1 / (VOCAB - 1))
    q[..., PAD_ID] = 0.0
    lp = F.log_softmax(logits, -1)
    expected = 0.9 * -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1) + (-(q * lp).sum(-1))
    torch.testing.assert_close(loss_s, expected[target != PAD_ID].sum())
    assert loss_s.requires_grad is False  # no grad inputs here
    logits.requires_grad_(True)
    label_smoothed_nll(logits, target, 0.1)[0].backward()
    assert logits.grad is not None and torch.all(logits.grad[0, 2:] == 0)


# --------------------------------------------------------------------------- golden values
def test_golden_logits() -> None:
    """Seeded tiny model: catches accidental behaviour changes (values computed once)."""
    model = tiny_model("gru", "bahdanau", input_feeding=True, layers=1, seed=1234).eval()
    src, lengths = random_source([5, 3], seed=7)
    tgt_in = random_target(2, 4, seed=8)
    with torch.no_grad():
        logits = model(src, lengths, tgt_in)
    got = logits[1, :, 4:8]
    expected = torch.tensor(GOLDEN_BAHDANAU)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)

    fast = tiny_model("lstm", "luong", input_feeding=False, layers=1, seed=1234).eval()
    with torch.no_grad():
        got = fast(src, lengths, tgt_in)[0, :, 10:14]
    torch.testing.assert_close(got, torch.tensor(GOLDEN_LUONG), rtol=0, atol=1e-4)


# logits[1, :, 4:8] of the seeded GRU bahdanau model (torch 2.9.1, CPU)
GOLDEN_BAHDANAU = [
    [-0.07579, -0.10983, -0.12408, 0.19597],
    [-0.11263, -0.11579, -0.15766, 0.20710],
    [-0.14055, -0.07078, -0.11942, 0.24647],
    [-0.13463, -0.06207, -0.05225, 0.24598],
]
# logits[0, :, 10:14] of the seeded LSTM luong fast-path model
GOLDEN_LUONG = [
    [0.00060, -0.08738, -0.02161, -0.03454],
    [0.01059, -0.08087, -0.02587, -0.05063],
    [-0.00477, -0.08499, -0.02874, -0.03267],
    [-0.01072, -0.08852, -0.03301, -0.02214],
]
