"""Import-only stand-in for `pandas` (GPU check only): NeMo's regex_tokenizer imports it at import time."""
