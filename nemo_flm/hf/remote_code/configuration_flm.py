"""FLMConfig: the configuration of an FLM (FLM-101B family) model in Hugging Face format.

Shipped inside every folder nemo_flm exports (loaded with `trust_remote_code=True`) and standalone:
it imports only transformers. The keys are FLM-101B's config.json schema (GPT-2 names plus
rotary/xPos and muP keys). One key FLM's schema lacks: `rotary_xpos_gamma`, xPos' decay
constant, written only when it differs from FLM's 0.4. `scale_attn_weights`,
`scale_attn_by_inverse_layer_idx` and `reorder_and_upcast_attn` are kept for the schema: in this
code family the last two scale the scores by the layer index and back around an fp32 softmax, a
net no-op, so the model reads none of the three (scores always 1/sqrt(head_dim), softmax in fp32).
"""

from transformers import PretrainedConfig


class FLMConfig(PretrainedConfig):
    model_type = "flm"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __init__(
        self,
        vocab_size=100352,
        n_positions=2048,
        n_embd=10240,
        n_layer=80,
        n_head=80,
        n_inner=None,
        activation_function="gelu_fast",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=True,
        reorder_and_upcast_attn=True,
        relative_encoding="rotary",
        rotary_theta=10000.0,
        rotary_use_xpos=True,
        rotary_xpos_scale_base=512.0,
        rotary_xpos_gamma=0.4,
        use_mup=False,
        mup_base_width=256,
        mup_scale_factor=1.0,
        input_mult=1.0,
        output_mult=1.0,
        use_cache=True,
        bos_token_id=100256,
        eos_token_id=100256,
        tie_word_embeddings=False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.scale_attn_weights = scale_attn_weights
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.reorder_and_upcast_attn = reorder_and_upcast_attn
        self.relative_encoding = relative_encoding
        self.rotary_theta = rotary_theta
        self.rotary_use_xpos = rotary_use_xpos
        self.rotary_xpos_scale_base = rotary_xpos_scale_base
        self.rotary_xpos_gamma = rotary_xpos_gamma
        self.use_mup = use_mup
        self.mup_base_width = mup_base_width
        self.mup_scale_factor = mup_scale_factor
        self.input_mult = input_mult
        self.output_mult = output_mult
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs
        )
