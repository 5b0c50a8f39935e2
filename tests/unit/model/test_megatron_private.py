"""The private megatron methods we replace are the ones recorded, and megatron's sources of them are
ones the replacements were reviewed against: a new megatron-core that changes any of them fails
here, naming the method, before a user sees wrong logits or a broken KV cache."""

from nemo_flm.model import megatron_private
from nemo_flm.model.attention import FLMSelfAttention
from nemo_flm.model.gpt import FLMGPTModel
from nemo_flm.model.megatron_private import OVERRIDES, private_methods_replaced, unreviewed


def test_megatron_sources_of_replaced_methods_are_reviewed():
    changed = unreviewed()
    assert not changed, (
        f"megatron-core changed {sorted(changed)} (digests {changed}), which nemo_flm replaces: "
        "review model/megatron_private.py's overrides against the new source and record the digest"
    )


def test_every_private_replacement_is_recorded():
    recorded = {(o.base.__name__, o.method) for o in OVERRIDES}
    assert {("GPTModel", m) for m in private_methods_replaced(FLMGPTModel)} <= recorded
    assert {("SelfAttention", m) for m in private_methods_replaced(FLMSelfAttention)} <= recorded
    assert private_methods_replaced(FLMSelfAttention) == ["_adjust_key_value_for_inference", "_allocate_memory"]


def test_a_changed_source_is_reported(monkeypatch):
    monkeypatch.setattr(megatron_private, "source_digest", lambda base, method: "000000000000")
    assert sorted(unreviewed()) == [
        "Attention._adjust_key_value_for_inference",
        "Attention._allocate_memory",
        "DistributedOptimizer._get_model_param_range_map",
        "GPTModel._postprocess",
    ]


def test_a_new_private_replacement_is_found():
    class Sneaky(FLMSelfAttention):
        def _checkpointed_attention_forward(self, *args, **kwargs):  # private in megatron 0.16 and 0.19
            raise NotImplementedError

        @classmethod
        def _clip_linear_qkv(cls, *args, **kwargs):  # a classmethod replacing a megatron method
            raise NotImplementedError

    found = private_methods_replaced(Sneaky)
    assert "_checkpointed_attention_forward" in found and "_clip_linear_qkv" in found
    assert ("SelfAttention", "_checkpointed_attention_forward") not in {(o.base.__name__, o.method) for o in OVERRIDES}
