"""Import-only stand-in for `transformers` (GPU check only): NeMo's nemo.collections.common imports
AutoModelForMaskedLM/AutoTokenizer at import time (parts/mlm_scorer.py) but nemo_flm never calls them."""


class _Missing:
    def __init__(self, *a, **k):
        raise ImportError("transformers is a stub on this machine")

    from_pretrained = classmethod(lambda cls, *a, **k: cls())


AutoModelForMaskedLM = AutoTokenizer = AutoModel = AutoConfig = _Missing
