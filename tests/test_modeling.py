"""GeoSANEConfig / GeoSANEModel: presets, parameter count, save/load, remote code, losses, halo windows, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

import geosane_hf
from geosane_hf.modeling import PRESETS, GeoSANEConfig, GeoSANEModel, masked_normalized_mse, nt_xent


def tiny_model(seed: int = 0, **overrides) -> GeoSANEModel:
    torch.manual_seed(seed)
    return GeoSANEModel(GeoSANEConfig.from_preset("tiny", **overrides)).eval()


def make_batch(batch: int = 2, length: int = 12, token_size: int = 230, seed: int = 1, pad_tail: int = 0):
    """Random tokens, tokenizer-like positions (two layers) and a mask with zero-padded tails."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, token_size, generator=generator)
    n = torch.arange(length)
    layer = (n >= length // 2).long()
    within = torch.where(layer == 0, n, n - length // 2)
    positions = torch.stack([n, layer, within], -1).expand(batch, length, 3).clone()
    mask = torch.ones(batch, length, token_size, dtype=torch.bool)
    mask[:, length // 2 - 1, token_size - 7 :] = False  # last token of layer 0 is partly padding
    if pad_tail:
        mask[:, length - pad_tail :] = False
    tokens = tokens * mask
    return tokens, positions, mask


# ------------------------------------------------------------------------------------------------ config
def test_presets_build_and_validate():
    tiny = GeoSANEConfig.from_preset("tiny")
    assert tiny.model_type == "geosane" and tiny.d_model == tiny.hidden_size == 64
    assert tiny.intermediate_size == 4 * tiny.hidden_size
    small = GeoSANEConfig.from_preset("small", latent_size=16)
    assert small.latent_size == 16 and small.latent_size < small.token_size
    base = GeoSANEConfig.from_preset("base-v1")
    assert (base.hidden_size, base.num_encoder_layers, base.latent_size, base.window_size) == (1536, 16, 128, 512)
    assert base.position_sum_dtype == "float16" and base.num_layer_types == 0
    with pytest.raises(ValueError, match="expected one of"):
        GeoSANEConfig.from_preset("huge")


def test_base_v1_has_exactly_the_published_parameter_count():
    with torch.device("meta"):
        model = GeoSANEModel(GeoSANEConfig.from_preset("base-v1"))
    two_d = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    others = sum(p.numel() for p in model.parameters() if p.dim() < 2)
    assert (two_d, others) == (909_036_420, 101_854)


def test_state_dict_uses_the_original_names():
    keys = set(tiny_model().state_dict())
    block = "transformer_encoder.transformer.1."
    expected = {
        "tokenizer.weight",
        "tokenizer.bias",
        f"{block}ln_1.weight",
        f"{block}attn.c_attn.weight",
        f"{block}attn.c_proj.weight",
        f"{block}ln_2.weight",
        f"{block}mlp.c_fc.weight",
        f"{block}mlp.c_proj.weight",
        "encoder_comp.weight",
        "decoder_comp.bias",
        "transformer_decoder.transformer.0.mlp.c_fc.weight",
        "detokenizer.bias",
        "projection_head.head.0.weight",
        "projection_head.head.1.bias",
        "projection_head.head.3.weight",
        "projection_head.head.4.weight",
    }
    assert expected <= keys
    assert not any(key.endswith(("ln_1.bias", "c_attn.bias", "c_fc.bias")) for key in keys)
    assert "projection_head.head.0.bias" not in keys


def test_init_follows_the_spec():
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny", num_encoder_layers=8))
    enc_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer_encoder.transformer])
    assert enc_proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.tokenizer.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model.tokenizer.bias) == 0
    assert torch.all(model.transformer_decoder.transformer[0].ln_1.weight == 1)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda t, p, m: (t[..., :100], p, None), "T = token_size = 230"),
        (lambda t, p, m: (t, p[..., :2], m), r"positions of shape \[B, N, 3\]"),
        (lambda t, p, m: (t, p[:, :5], m), r"positions of shape \[B, N, 3\]"),
        (lambda t, p, m: (t, p.float(), m), "expected integer positions"),
        (lambda t, p, m: (t, p, m[:, :5]), "mask of the same shape"),
        (lambda t, p, m: (t.long(), p, m), "floating-point tokens"),
    ],
)
def test_bad_inputs_raise_clear_errors(make_args, message):
    model = tiny_model()
    tokens, positions, mask = make_batch()
    with pytest.raises(ValueError, match=message):
        model.encode(*make_args(tokens, positions, mask))


def test_bad_config_and_learned_table_errors():
    with pytest.raises(ValueError, match=r"divisible by num_attention_heads.*hidden_size=30"):
        GeoSANEConfig.from_preset("tiny", hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="larger than the learned position table"):
        GeoSANEConfig.from_preset("tiny", position_encoding="learned", max_position_embeddings=[16, 8, 64])
    model = tiny_model(position_encoding="learned", max_position_embeddings=[64, 4, 64])
    tokens, positions, _ = make_batch()
    positions = positions.to(torch.int16)  # as the tokenizer stores them
    latents = model.encode(tokens, positions)
    assert latents.shape == (2, 12, 16)
    table = model.pe  # [pe1(n) + pe2(layer) | pe3(j)]
    expected = torch.cat([table.pe1.weight[3] + table.pe2.weight[0], table.pe3.weight[3]])
    torch.testing.assert_close(model.pe(positions)[0, 3], expected)
    positions[0, 0, 1] = 4
    with pytest.raises(ValueError, match=r"positions\[\.\.\., 1\] reaches 4.*4 entries"):
        model.encode(tokens, positions)
    with pytest.raises(ValueError, match="latent_size = 16"):
        model.decode(torch.zeros(1, 3, 8), positions[:1, :3])
    typed = tiny_model(num_layer_types=3)
    with pytest.raises(ValueError, match=r"layer_types in \[0, 3\)"):
        typed.encode(tokens, make_batch()[1], layer_types=torch.full((2, 12), 3))


# ---------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_and_auto_classes(tmp_path):
    model = tiny_model()
    tokens, positions, mask = make_batch()
    expected = model(tokens, positions, mask, tokens_2=tokens.flip(0), return_loss=True)
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "modeling_geosane.py", "configuration_geosane.py"} <= set(
        os.listdir(tmp_path)
    )
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["auto_map"] == {
        "AutoConfig": "configuration_geosane.GeoSANEConfig",
        "AutoModel": "modeling_geosane.GeoSANEModel",
    }
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GeoSANEConfig)
    for loaded in (GeoSANEModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, GeoSANEModel)
        got = loaded.eval()(tokens, positions, mask, tokens_2=tokens.flip(0))
        torch.testing.assert_close(got.latents, expected.latents, rtol=0, atol=0)
        torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=0)


REMOTE_SCRIPT = """
import importlib, sys
sys.modules["geosane_hf"] = None  # the package (installed editable in this venv) must not be importable
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
try:
    import geosane_hf  # noqa
    raise SystemExit("geosane_hf is importable")
except ImportError:
    pass
import torch
from transformers import AutoModel
folder, inputs, output = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert not any(name == "modeling" or name.startswith(("geosane_hf.", "modeling.")) for name in sys.modules)
data = torch.load(inputs, weights_only=True)
with torch.no_grad():
    latents = model.encode(data["tokens"], data["positions"], data["mask"])
    out = model(data["tokens"], data["positions"], data["mask"], tokens_2=data["tokens"].flip(0))
    latents_long = model.encode_long(data["tokens"][0], data["positions"][0], data["mask"][0], window_size=4, halo_size=1)
torch.save({"latents": latents, "reconstruction": out.reconstruction, "loss": out.loss, "latents_long": latents_long}, output)
print(type(model).__module__)
"""


def _load_remote_in_a_clean_process(folder, inputs, tmp_path) -> dict[str, torch.Tensor]:
    """Runs REMOTE_SCRIPT on a saved folder: a fresh ``python -I`` without the package, offline; its outputs."""
    script = tmp_path / "load_remote.py"
    script.write_text(textwrap.dedent(REMOTE_SCRIPT))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), str(inputs), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout
    return torch.load(tmp_path / "out.pt", weights_only=True)


def test_remote_code_load_in_a_clean_process(tmp_path):
    model = tiny_model()
    tokens, positions, mask = make_batch()
    with torch.no_grad():
        latents = model.encode(tokens, positions, mask)
        expected = model(tokens, positions, mask, tokens_2=tokens.flip(0))
        latents_long = model.encode_long(tokens[0], positions[0], mask[0], window_size=4, halo_size=1)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    torch.save({"tokens": tokens, "positions": positions, "mask": mask}, tmp_path / "inputs.pt")
    got = _load_remote_in_a_clean_process(folder, tmp_path / "inputs.pt", tmp_path)
    torch.testing.assert_close(got["latents"], latents, rtol=0, atol=0)
    torch.testing.assert_close(got["reconstruction"], expected.reconstruction, rtol=0, atol=0)
    torch.testing.assert_close(got["loss"], expected.loss, rtol=0, atol=0)
    torch.testing.assert_close(got["latents_long"], latents_long, rtol=0, atol=0)


SAVE_SCRIPT = """
import sys
root, folder, inputs = sys.argv[1:4]
sys.path.insert(0, root)
import torch
import modeling  # this repository's files, whichever copy `geosane_hf.modeling` is installed from
assert modeling.__file__.startswith(root), modeling.__file__
torch.manual_seed(0)
model = modeling.GeoSANEModel(modeling.GeoSANEConfig.from_preset("tiny")).eval()
model.save_pretrained(folder)
data = torch.load(inputs, weights_only=True)
with torch.no_grad():
    out = model(data["tokens"], data["positions"], data["mask"], tokens_2=data["tokens"].flip(0))
    expected = {
        "latents": model.encode(data["tokens"], data["positions"], data["mask"]),
        "reconstruction": out.reconstruction,
        "loss": out.loss,
        "latents_long": model.encode_long(
            data["tokens"][0], data["positions"][0], data["mask"][0], window_size=4, halo_size=1
        ),
    }
torch.save(expected, inputs.replace("inputs", "expected"))
"""


def test_the_split_remote_code_is_saved_whole_and_loads_without_the_package(tmp_path):
    """modeling_geosane.py imports its siblings (layers, long inputs) relatively: save_pretrained must copy every one
    (transformers' custom_object_save follows relative imports), byte for byte, and a fresh process without the
    package must load the folder with trust_remote_code and compute the same outputs."""
    root = Path(__file__).resolve().parents[1]
    folder = tmp_path / "saved"
    tokens, positions, mask = make_batch()
    torch.save({"tokens": tokens, "positions": positions, "mask": mask}, tmp_path / "inputs.pt")
    (tmp_path / "save.py").write_text(textwrap.dedent(SAVE_SCRIPT))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS"))}
    saved = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "save.py"), str(root), str(folder), str(tmp_path / "inputs.pt")],
        cwd=tmp_path,
        env={**env, "HF_HOME": str(tmp_path / "hf_save"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    sources = {p.name: p for p in (root / "modeling").glob("*.py") if p.name != "__init__.py"}
    assert {"modeling_geosane_layers.py", "modeling_geosane_long.py"} <= set(sources)  # the split this guards
    assert {p.name for p in folder.glob("*.py")} == set(sources)
    for name, source in sources.items():
        assert (folder / name).read_bytes() == source.read_bytes(), name
    got = _load_remote_in_a_clean_process(folder, tmp_path / "inputs.pt", tmp_path)
    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_import_registers_auto_classes():
    assert geosane_hf.GeoSANEModel is GeoSANEModel
    config = AutoConfig.for_model("geosane", **PRESETS["tiny"])
    assert isinstance(AutoModel.from_config(config), GeoSANEModel)


# ---------------------------------------------------------------------------------------------- losses
def reference_loss(model, tokens, positions, mask, tokens_2):
    """The objective from its definition, with explicit loops (independent of the model's loss code)."""
    with torch.no_grad():
        both = torch.cat([tokens, tokens_2])
        both_mask = torch.cat([mask, mask])
        both_positions = torch.cat([positions, positions])
        latents = model.encode(both, both_positions, both_mask)
        recon = model.decode(latents, both_positions).double()
    real_targets = [
        v for v, m in zip(both.double().flatten().tolist(), both_mask.flatten().tolist(), strict=True) if m
    ]
    count = len(real_targets)
    mean = sum(real_targets) / count
    std = math.sqrt(sum((v - mean) ** 2 for v in real_targets) / (count - 1))
    squared = [
        ((o - mean) / std - (t - mean) / std) ** 2
        for o, t, m in zip(
            recon.flatten().tolist(), both.double().flatten().tolist(), both_mask.flatten().tolist(), strict=True
        )
        if m
    ]
    reconstruction = sum(squared) / len(squared)
    flat = latents.reshape(latents.shape[0], -1)
    flat = torch.nn.functional.pad(flat, (0, model.config.window_size * model.config.latent_size - flat.shape[1]))
    proj = model.projection_head.head(flat).detach().double()
    batch = tokens.shape[0]
    total = 0.0
    for i in range(2 * batch):
        positive = (i + batch) % (2 * batch)
        sims = {j: float(torch.nn.functional.cosine_similarity(proj[i], proj[j], dim=0)) for j in range(2 * batch)}
        denominator = sum(math.exp(sims[j] / model.config.temperature) for j in range(2 * batch) if j != i)
        total += -math.log(math.exp(sims[positive] / model.config.temperature) / denominator)
    contrastive = total / (2 * batch)
    gamma = model.config.contrastive_weight
    return gamma * contrastive + (1 - gamma) * reconstruction, reconstruction, contrastive


def test_loss_equals_its_definition_on_a_crafted_batch():
    model = tiny_model(contrastive_weight=0.3)
    tokens, positions, mask = make_batch(batch=3, length=10)
    tokens_2 = tokens * (1 + 0.1 * torch.randn_like(tokens)) * mask
    out = model(tokens, positions, mask, tokens_2=tokens_2)
    loss, reconstruction, contrastive = reference_loss(model, tokens, positions, mask, tokens_2)
    assert out.reconstruction_loss.item() == pytest.approx(reconstruction, rel=1e-5)
    assert out.contrastive_loss.item() == pytest.approx(contrastive, rel=1e-5)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.latents.shape == (6, 10, 16) and out.projections.shape == (6, 30)
    single = model(tokens, positions, mask)
    assert single.contrastive_loss is None
    assert single.loss.item() == pytest.approx(masked_normalized_mse(single.reconstruction, tokens, mask).item())


def test_masked_normalized_mse_by_hand():
    target = torch.tensor([[2.0, 4.0, 6.0, 99.0]])
    output = torch.tensor([[3.0, 4.0, 5.0, -50.0]])
    mask = torch.tensor([[True, True, True, False]])
    # mean 4, unbiased std 2 -> squared standardized errors (0.25, 0, 0.25) over 3 real values; padding ignored
    assert masked_normalized_mse(output, target, mask).item() == pytest.approx(0.5 / 3)
    # NT-Xent by hand: z = normalize([p1; p2]); row i's positive is row (i + B) mod 2B
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    sims = [[1, 0, 1, r], [0, 1, 0, r], [1, 0, 1, r], [r, r, r, 1]]  # cosine similarities
    t = 0.5
    rows = [
        -math.log(math.exp(sims[i][(i + 2) % 4] / t) / sum(math.exp(sims[i][j] / t) for j in range(4) if j != i))
        for i in range(4)
    ]
    assert nt_xent(p1, p2, temperature=t).item() == pytest.approx(sum(rows) / 4, rel=1e-6)


def test_gradients_flow_through_both_losses():
    model = tiny_model(contrastive_weight=0.5).train()
    tokens, positions, mask = make_batch()
    out = model(tokens, positions, mask, tokens_2=tokens + 0.05 * torch.randn_like(tokens))
    out.contrastive_loss.backward(retain_graph=True)
    grads = {name: p.grad.abs().sum().item() for name, p in model.named_parameters() if p.grad is not None}
    assert grads["projection_head.head.0.weight"] > 0 and grads["tokenizer.weight"] > 0
    assert "detokenizer.weight" not in grads  # the contrastive term does not reach the decoder
    model.zero_grad()
    out.reconstruction_loss.backward()
    for name, p in model.named_parameters():
        if not name.startswith("projection_head"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients():
    tokens, positions, mask = make_batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.transformer_encoder.transformer[0].gradient_checkpointing
        model(tokens, positions, mask, tokens_2=tokens.flip(1)).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_autocast_and_eager_attention_agree_with_fp32_sdpa():
    model = tiny_model()
    tokens, positions, mask = make_batch(batch=1, length=6)
    reference = model.encode(tokens, positions, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, positions, mask, tokens_2=tokens)
    assert torch.isfinite(out.loss) and out.latents.dtype == torch.bfloat16
    torch.testing.assert_close(out.latents[:1].float(), reference, atol=0.05, rtol=0.05)
    model.config._attn_implementation = "eager"
    torch.testing.assert_close(model.encode(tokens, positions, mask), reference, atol=1e-5, rtol=1e-5)


def test_padding_tokens_do_not_influence_real_tokens_and_layer_types_are_optional():
    model = tiny_model()
    tokens, positions, mask = make_batch(length=12, pad_tail=3)
    padded = model.encode(tokens, positions, mask)
    alone = model.encode(tokens[:, :9], positions[:, :9], mask[:, :9])
    torch.testing.assert_close(padded[:, :9], alone, atol=1e-5, rtol=1e-5)
    layer_types = torch.randint(0, 4, (2, 12))
    torch.testing.assert_close(model.encode(tokens, positions, mask, layer_types=layer_types), padded)  # ignored
    typed = tiny_model(num_layer_types=4)
    assert not torch.allclose(
        typed.encode(tokens, positions, mask, layer_types), typed.encode(tokens, positions, mask)
    )


def test_position_code_follows_the_spec_with_float16_accumulation():
    model = tiny_model(position_sum_dtype="float16")
    positions = torch.tensor([[[0, 0, 0], [3, 1, 2], [40000, 7, 229]]])
    emb = model.pe(positions)
    assert emb.dtype == torch.float16
    d = model.config.hidden_size
    expected = torch.zeros(1, 3, d, dtype=torch.float16)
    for column in range(3):
        for k in range(d // 2):
            angle = positions[0, :, column].double() * math.exp(2 * k * -math.log(10000.0) / d)
            expected[0, :, 2 * k] += torch.sin(angle).to(torch.float16)
            expected[0, :, 2 * k + 1] += torch.cos(angle).to(torch.float16)
    torch.testing.assert_close(emb.float(), expected.float(), atol=4e-3, rtol=0)


# --------------------------------------------------------------------------------------- halo windows
@pytest.mark.parametrize("length", [1, 5, 15, 16, 17, 19, 20, 21, 31, 32, 33, 35, 36, 37, 50])
def test_halo_windows_cover_every_token_once(length):
    windows = GeoSANEModel.halo_windows(length, 16, 4)
    content = [n for _, start, end, _ in windows for n in range(start, end)]
    assert content == list(range(length))
    for ctx_start, start, end, ctx_end in windows:
        assert ctx_start == max(0, start - 4) and ctx_end == min(length, end + 4) and end - start <= 16


@pytest.mark.parametrize("length", [15, 16, 17, 19, 20, 21, 35, 36, 37])
def test_encode_long_is_exact_at_the_edges(length):
    """Every window's content equals a direct encode of [left halo + content + right halo], for N near
    multiples of the window where the original misaligned (0 < N mod window < halo)."""
    model = tiny_model()
    window, halo = 16, 4
    tokens, positions, mask = make_batch(batch=1, length=length, seed=length)
    tokens, positions, mask = tokens[0], positions[0], mask[0]
    latents = model.encode_long(tokens, positions, mask, window_size=window, halo_size=halo, batch_size=3)
    assert latents.shape == (length, 16)
    for ctx_start, start, end, ctx_end in GeoSANEModel.halo_windows(length, window, halo):
        direct = model.encode(tokens[None, ctx_start:ctx_end], positions[None, ctx_start:ctx_end])[0]
        torch.testing.assert_close(
            latents[start:end], direct[start - ctx_start : end - ctx_start], atol=2e-5, rtol=1e-5
        )
    one_by_one = model.encode_long(tokens, positions, mask, window_size=window, halo_size=halo, batch_size=1)
    torch.testing.assert_close(latents, one_by_one, atol=2e-5, rtol=1e-5)
    decoded = model.decode_long(latents, positions, window_size=window, halo_size=halo, batch_size=2)
    for ctx_start, start, end, ctx_end in GeoSANEModel.halo_windows(length, window, halo):
        direct = model.decode(latents[None, ctx_start:ctx_end], positions[None, ctx_start:ctx_end])[0]
        torch.testing.assert_close(
            decoded[start:end], direct[start - ctx_start : end - ctx_start], atol=2e-5, rtol=1e-5
        )
    if length <= window:  # one window: the whole sequence is its own context
        torch.testing.assert_close(latents, model.encode(tokens[None], positions[None])[0], atol=2e-5, rtol=1e-5)


def test_halo_context_matters_and_long_inputs_are_validated():
    model = tiny_model()
    tokens, positions, _ = make_batch(batch=1, length=40)
    with_halo = model.encode_long(tokens[0], positions[0], window_size=16, halo_size=4)
    without = model.encode_long(tokens[0], positions[0], window_size=16, halo_size=0)
    assert not torch.allclose(with_halo[:16], without[:16])  # the right halo changes the first window
    with pytest.raises(ValueError, match=r"shape \[N, T\]"):
        model.encode_long(tokens, positions[0])
    with pytest.raises(ValueError, match="batch_size > 0"):
        model.encode_long(tokens[0], positions[0], batch_size=0)


def test_forward_rejects_unknown_keyword_arguments():
    model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    tokens = torch.randn(1, 4, model.config.token_size)
    positions = torch.zeros(1, 4, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"unknown \['lables'\]"):
        model(tokens, positions, lables=tokens)
    assert model(tokens, positions, return_dict=True).loss is not None  # generic transformers keywords pass
