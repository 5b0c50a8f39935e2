"""FLM: the FLM-101B model (GPT-3-style pre-LN blocks, xPos rotary positions) for Hugging Face transformers.

Shipped inside every folder nemo_flm exports and standalone (it imports torch and transformers
only), so it restates the position formula of nemo_flm/model/xpos.py rather than importing it;
nemo_flm's tests hold the two to the same logits. Written for transformers 5.x (tested with 5.24).

For head dim d and pair i = 0 .. d/2-1 (half-split layout: element i pairs with i + d/2):
    theta_i = rotary_theta^(-2i/d)                    angle at position p is p * theta_i
    zeta_i  = (2i + gamma*d) / ((1+gamma)*d)          xPos decay base (gamma 0.4)
    q_m -> R(m) q_m * zeta^((m-c)/scale_base),  k_n -> R(n) k_n * zeta^(-(n-c)/scale_base)
so q_m . k_n carries zeta^((m-n)/scale_base) whatever the centre c. Angles and scales are computed
in float64, applied in float32 (or the model's wider dtype). Without xPos (rotary_use_xpos false)
it is plain RoPE.

KV cache: keys are rotated and scaled once, when written, and never re-rotated. The centre starts
at n_positions // 2 (as in nemo_flm) and lives on the cache object; when a forward reaches past
c + 16 * scale_base (zeta_0^-16 ~ 5e8), the centre moves to the middle of that forward's positions
and the cached keys are multiplied by zeta^((c_new - c_old)/scale_base), which turns their factor
zeta^(-(n-c_old)/scale_base) into zeta^(-(n-c_new)/scale_base); so no factor leaves floating-point
range however long the sequence. Positions are the cache length + 0..s-1 for every row
(position_ids are not read): scores depend on m - n only, so a row's offset (left padding, masked by
attention_mask) changes nothing.

Attention scores are scaled by 1/sqrt(head_dim) and softmaxed in fp32. The embeddings are multiplied
by input_mult (always, as nemo_flm does) and, with use_mup, the logits by output_mult / mup_scale_factor.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.pytorch_utils import Conv1D

from .configuration_flm import FLMConfig

RECENTRE_AFTER = 16  # scale bases past the centre before the centre moves
TANH_GELU = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh")  # one function: GeLU's tanh approximation


def _pair_constants(config: FLMConfig, head_dim: int):
    """(theta_i, zeta_i), each [d/2] float64."""
    two_i = torch.arange(0, head_dim, 2, dtype=torch.float64)
    theta = 1.0 / config.rotary_theta ** (two_i / head_dim)
    gamma = config.rotary_xpos_gamma
    zeta = (two_i + gamma * head_dim) / ((1.0 + gamma) * head_dim)
    return theta, zeta


def _both_halves(x: torch.Tensor) -> torch.Tensor:
    """[..., d/2] -> [..., d]: the same value for both members of a rotary pair."""
    return torch.cat((x, x), dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def place(x: torch.Tensor, positions: torch.Tensor, config: FLMConfig, centre: float, sign: float) -> torch.Tensor:
    """x [b, heads, s, d] at positions [s]: rotated and, with xPos, scaled by zeta^(sign (p - centre)/scale_base)."""
    theta, zeta = _pair_constants(config, x.shape[-1])
    p = positions.double().cpu()[:, None]  # [s, 1]
    angles = _both_halves(p * theta)  # [s, d]
    cos, sin = angles.cos(), angles.sin()
    if config.rotary_use_xpos:
        scale = _both_halves(zeta[None, :] ** ((p - centre) / config.rotary_xpos_scale_base)) ** sign
        cos, sin = cos * scale, sin * scale  # scaling commutes with the rotation
    compute = torch.promote_types(x.dtype, torch.float32)
    cos, sin = cos.to(x.device, compute), sin.to(x.device, compute)
    xc = x.to(compute)
    return (xc * cos + _rotate_half(xc) * sin).to(x.dtype)


def recentre(cache, config: FLMConfig, head_dim: int, end: int) -> float:
    """The xPos centre for a forward whose last position is end - 1; moves it (rescaling every cached
    key) when end - 1 is past centre + 16 scale bases."""
    default = float(config.n_positions // 2)
    centre = getattr(cache, "flm_xpos_centre", default) if cache is not None else default
    if not config.rotary_use_xpos or end - 1 <= centre + RECENTRE_AFTER * config.rotary_xpos_scale_base:
        return centre
    past = cache.get_seq_length() if cache is not None else 0
    new_centre = float((past + end - 1) // 2)
    if past:
        _, zeta = _pair_constants(config, head_dim)
        factor = _both_halves(zeta ** ((new_centre - centre) / config.rotary_xpos_scale_base))  # [d]
        for layer in cache.layers:
            compute = torch.promote_types(layer.keys.dtype, torch.float32)
            layer.keys.copy_(layer.keys.to(compute) * factor.to(layer.keys.device, compute))
    if cache is not None:
        cache.flm_xpos_centre = new_centre
    return new_centre


class FLMAttention(nn.Module):
    def __init__(self, config: FLMConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)  # [in, out]; out = q | k | v blocks
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, positions, centre, allowed, cache):
        b, s, _ = x.shape
        q, k, v = self.c_attn(x).view(b, s, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x [b, h, s, d]
        q, k = place(q, positions, self.config, centre, 1.0), place(k, positions, self.config, centre, -1.0)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # [b, h, t, d]: every key so far
        compute = torch.promote_types(q.dtype, torch.float32)
        scores = torch.matmul(q.to(compute), k.to(compute).transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed, torch.finfo(compute).min)  # [b, h, s, t]
        probs = self.attn_dropout(scores.softmax(dim=-1).to(v.dtype))
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(out))


class FLMMLP(nn.Module):
    def __init__(self, config: FLMConfig):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class FLMBlock(nn.Module):
    """Pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: FLMConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = FLMAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = FLMMLP(config)

    def forward(self, x, positions, centre, allowed, cache):
        x = x + self.attn(self.ln_1(x), positions, centre, allowed, cache)
        return x + self.mlp(self.ln_2(x))


class FLMTransformer(nn.Module):
    def __init__(self, config: FLMConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(FLMBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, hidden, attention_mask, cache):
        """hidden [b, s, n_embd] (embedded); attention_mask [b, past + s] (1 = keep) or None.
        A forward longer than 16 scale bases runs in chunks of that length through a cache (a
        temporary one without use_cache), so that each chunk's xPos factors stay in float range."""
        step = max(1, int(RECENTRE_AFTER * self.config.rotary_xpos_scale_base))
        if not self.config.rotary_use_xpos or hidden.shape[1] <= step:
            return self._forward(hidden, attention_mask, cache)
        cache = cache if cache is not None else DynamicCache(config=self.config)
        past, parts = cache.get_seq_length(), []
        for start in range(0, hidden.shape[1], step):
            mask = None if attention_mask is None else attention_mask[:, : past + start + step]
            parts.append(self._forward(hidden[:, start : start + step], mask, cache))
        return torch.cat(parts, dim=1)

    def _forward(self, hidden, attention_mask, cache):
        s = hidden.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        centre = recentre(cache, self.config, self.config.n_embd // self.config.n_head, past + s)
        positions = torch.arange(past, past + s, device=hidden.device)
        keys = torch.arange(past + s, device=hidden.device)
        allowed = (keys[None, :] <= positions[:, None])[None, None]  # [1, 1, s, t] causal
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # [b, 1, s, t]
        hidden = self.drop(hidden)
        for block in self.h:
            hidden = block(hidden, positions, centre, allowed, cache)
        return self.ln_f(hidden)


class FLMPreTrainedModel(PreTrainedModel):
    config_class = FLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["FLMBlock"]


class FLM(FLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: FLMConfig):
        super().__init__(config)
        if config.activation_function not in TANH_GELU:
            raise ValueError(f"activation_function must be one of {TANH_GELU}, got '{config.activation_function}'")
        self.transformer = FLMTransformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        cache=None,
        attention_mask=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        """Logits [b, s, vocab] (the last `logits_to_keep` positions when > 0); `cache` (a transformers
        Cache, e.g. DynamicCache, or None) is extended in place and returned when use_cache."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if inputs_embeds is None:
            inputs_embeds = self.transformer.wte(input_ids)
        hidden = self.transformer(inputs_embeds * self.config.input_mult, attention_mask, cache if use_cache else None)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        if self.config.use_mup:
            hidden = hidden * (self.config.output_mult / self.config.mup_scale_factor)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
