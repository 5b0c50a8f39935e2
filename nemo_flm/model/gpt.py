"""FLMGPTModel: megatron-core's GPTModel plus FLM's two scalar multipliers.

FLM's HF config multiplies the embedding output by `input_mult` and the logits by
`output_mult / mup_scale_factor` when `use_mup` is on (docs/flm_facts.md §2). GPTModel has no such
hooks: the embedding output is computed here and handed in as `decoder_input`, and the final
hidden states are scaled on their way into the (bias-free, linear) output layer, which scales the
logits exactly while megatron keeps computing logits and loss in its own [s, b, v] layout.
With `blockwise_window`, sequences longer than the window get the blockwise causal mask
(model/blockwise.py), built here where the cache offset is known and handed to every layer.
"""

from __future__ import annotations

from typing import Optional

from megatron.core.models.gpt import GPTModel
from torch import Tensor

from nemo_flm import parallel
from nemo_flm.model.blockwise import blockwise_mask


class FLMGPTModel(GPTModel):
    def __init__(
        self,
        *args,
        input_mult: float = 1.0,
        logit_scale: float = 1.0,
        blockwise_window: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.input_mult = input_mult
        self.logit_scale = logit_scale
        self.blockwise_window = blockwise_window

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        inference_context=None,
        runtime_gather_output: Optional[bool] = None,
        decoder_input: Optional[Tensor] = None,
        **kwargs,
    ) -> Tensor:
        """Logits [b, s, vocab(/TP)] or, with labels [b, s], the per-token loss [b, s] (fp32).

        With an inference context the logits are gathered over TP, here on the logits' own device
        (megatron's gather allocates on torch.cuda.current_device(), which CPUs lack)."""
        if self.blockwise_window is not None and attention_mask is None:
            first = inference_context.sequence_len_offset if inference_context is not None else 0
            attention_mask = blockwise_mask(first, input_ids.shape[1], self.blockwise_window, input_ids.device)
        if self.pre_process and decoder_input is None and self.input_mult != 1.0:
            decoder_input = self.embedding(input_ids=input_ids, position_ids=position_ids) * self.input_mult
        out = super().forward(
            input_ids,
            position_ids,
            attention_mask,
            decoder_input=decoder_input,
            labels=labels,
            inference_context=inference_context,
            runtime_gather_output=runtime_gather_output,
            **kwargs,
        )
        if inference_context is not None and labels is None and self.post_process:
            return _gather_vocab(out)
        return out

    def _postprocess(self, hidden_states: Tensor, **kwargs):
        """Scale the final hidden states by the logit multiplier before the output layer. The
        inference context is not passed on (megatron would insist on its CUDA-only TP gather;
        forward gathers instead): its one other use, logits of the last position only (what
        generation needs, without a [s, vocab] tensor per prompt chunk), is applied here."""
        ctx = kwargs.get("inference_context")
        if ctx is not None and ctx.materialize_only_last_token_logits and kwargs.get("labels") is None:
            hidden_states = hidden_states[-1:]
        if self.post_process and self.logit_scale != 1.0:
            hidden_states = hidden_states * self.logit_scale
        return super()._postprocess(hidden_states=hidden_states, **{**kwargs, "inference_context": None})


def _gather_vocab(logits: Tensor) -> Tensor:
    """[b, s, vocab/TP] shards -> [b, s, vocab], in tensor-parallel rank order."""
    return parallel.all_gather_cat(logits, parallel.tp_group(), dim=-1)
