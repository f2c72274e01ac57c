"""LoRA adapters: the merge in float64 NumPy, SFT on the adapters alone, and peft's unmerged LoRA as the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.data import tokenize_pairs
from lm.align.sft import sft_loss
from lm.align.step import loss_weights
from lm.model import forward
from lm.model.lora import TARGETS, LoRAConfig, init_lora, merge, param_count, target_names
from lm.optim import OptimizerConfig, build_optimizer
from lm.train.config import TrainConfig
from tests.align import tiny
from tests.inference.tiny import model as tiny_variant

ALL = LoRAConfig(rank=4, alpha=8.0, targets=("attn", "mlp"))
# Compiled once each: op-by-op dispatch compiles every small op separately, seconds in all on a busy CPU.
init_jit = jax.jit(init_lora, static_argnums=1)
merge_jit = jax.jit(merge, static_argnums=2)


def _random_adapters(params, config, seed=1):
    """Adapters with B drawn too (init sets it to zero), so the update is not trivially zero."""
    rng = np.random.default_rng(seed)
    adapters = jax.eval_shape(lambda: init_lora(params, config, jax.random.PRNGKey(seed)))
    return jax.tree.map(lambda x: np.asarray(rng.normal(0, 0.1, x.shape), np.float32), adapters)


def test_merge_is_w_plus_scaled_ab():
    params = tiny.params()
    assert target_names(params, ALL) == ("q", "k", "v", "o", "w1", "w2", "w3")
    fresh = init_jit(params, ALL, jax.random.PRNGKey(0))
    assert fresh["q"]["a"].shape == (2, 32, 4) and fresh["q"]["b"].shape == (2, 4, 32)  # d_model -> heads * hd
    assert fresh["o"]["a"].shape == (2, 32, 4) and fresh["w2"]["b"].shape == (2, 4, 32)
    for leaf, want in zip(jax.tree.leaves(merge_jit(params, fresh, ALL)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(leaf, want)  # B = 0: the merged model starts as the base model
    adapters = _random_adapters(params, ALL)
    merged = merge_jit(params, adapters, ALL)
    for name, path in TARGETS.items():
        w = params["blocks"]
        got = merged["blocks"]
        for k in path:
            w, got = w[k], got[k]
        a, b = (np.asarray(adapters[name][k], np.float64) for k in ("a", "b"))
        want = np.asarray(w, np.float64) + (8.0 / 4) * np.einsum("lir,lro->lio", a, b).reshape(w.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(merged["embed"]["embedding"], params["embed"]["embedding"])
    np.testing.assert_array_equal(merged["blocks"]["attn_norm"]["scale"], params["blocks"]["attn_norm"]["scale"])


def test_targets_are_checked():
    with pytest.raises(ValueError, match="targets"):
        LoRAConfig(targets=("q", "mlp_in"))
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
    moe_params, _ = tiny_variant("moe-sinusoidal-layernorm")
    with pytest.raises(ValueError, match="mixture-of-experts"):
        target_names(moe_params, LoRAConfig(targets=("mlp",)))
    assert target_names(moe_params, LoRAConfig(targets=("q", "v"))) == ("q", "v")


@pytest.fixture(scope="module")
def lora_sft():
    """Ten LoRA SFT steps (adapters only, lm.optim's AdamW) on three prompt/response pairs."""
    params = jax.tree.map(jnp.asarray, tiny.params())
    base_before = jax.tree.map(np.array, params)
    config = TrainConfig(model=tiny.CONFIG)
    pairs = tokenize_pairs([[10, 11, 12], [20, 21], [30]], [[50, 51, 256], [60, 256], [70, 71, 72, 256]], 32)
    batch = {k: jnp.asarray(v) for k, v in pairs.items()}
    batch["weights"] = loss_weights(batch["response_mask"])
    adapters = init_jit(params, ALL, jax.random.PRNGKey(0))
    optimizer = build_optimizer(OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0), 10)
    opt_state = optimizer.init(adapters)

    @jax.jit
    def step(adapters, opt_state, params, batch):
        loss_fn = lambda a: sft_loss(merge(params, a, ALL), batch, config, with_entropy=False)[0]  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(adapters)
        updates, opt_state = optimizer.update(grads, opt_state, adapters)
        return jax.tree.map(jnp.add, adapters, updates), opt_state, loss

    losses = []
    for _ in range(10):
        adapters, opt_state, loss = step(adapters, opt_state, params, batch)
        losses.append(float(loss))
    return {"losses": losses, "adapters": adapters, "opt_state": opt_state, "params": params,
            "base_before": base_before}


def test_lora_sft_lowers_the_loss_and_trains_only_the_adapters(lora_sft):
    losses = lora_sft["losses"]
    assert losses[-1] < losses[0] - 1.5 and all(b < a for a, b in zip(losses, losses[1:])), losses
    for leaf, before in zip(jax.tree.leaves(lora_sft["params"]), jax.tree.leaves(lora_sft["base_before"])):
        np.testing.assert_array_equal(leaf, before)
    # The optimizer holds AdamW's two moments of the adapters (and step counters), nothing of the base model.
    n_adapters = param_count(lora_sft["adapters"])
    assert n_adapters == 2 * 4 * (4 * (32 + 32) + 2 * (32 + 64) + (64 + 32))  # layers x rank x (d_in + d_out)
    assert 2 * n_adapters <= param_count(lora_sft["opt_state"]) <= 2 * n_adapters + 8
    adapter_shapes = {x.shape for x in jax.tree.leaves(lora_sft["adapters"])}
    assert {x.shape for x in jax.tree.leaves(lora_sft["opt_state"]) if np.size(x) > 1} == adapter_shapes
    assert n_adapters < 0.2 * param_count(lora_sft["params"])


@pytest.mark.slow  # importing torch, transformers and peft and building the model: about 10 s, 45 s under load
def test_merged_logits_match_peft_unmerged_lora(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from lm.interop import save_hf

    params = tiny.params()
    adapters = _random_adapters(params, ALL, seed=2)
    save_hf(params, tiny.CONFIG, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    modules = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "w1": "gate_proj", "w3": "up_proj",
               "w2": "down_proj"}
    model = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8.0, target_modules=list(modules.values()),
                                                    lora_dropout=0.0, bias="none"))
    for layer in range(tiny.CONFIG.n_layers):
        block = model.base_model.model.model.layers[layer]
        for name, module in modules.items():
            lin = getattr(block.self_attn if name in ("q", "k", "v", "o") else block.mlp, module)
            lin.lora_A["default"].weight.data = torch.tensor(adapters[name]["a"][layer].T.copy())  # [r, d_in]
            lin.lora_B["default"].weight.data = torch.tensor(adapters[name]["b"][layer].T.copy())  # [d_out, r]
            assert not lin.merged  # peft adds x A B beside the frozen W
    tokens = np.random.default_rng(0).integers(0, 257, (2, 20))
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    ours = np.asarray(forward(merge(params, adapters, ALL), jnp.asarray(tokens), tiny.CONFIG))
    unadapted = np.asarray(forward(params, jnp.asarray(tokens), tiny.CONFIG))
    assert np.abs(ours - unadapted).max() > 0.1  # the adapters matter at this scale
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
