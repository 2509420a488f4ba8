"""CLIP's byte-level BPE tokenizer, exactly as open_clip's `SimpleTokenizer` (clean='lower').

Cleaning: ftfy.fix_text, html.unescape twice, strip, whitespace collapse (str.split), lower.
Encoding: [SOT] + BPE ids + [EOT], truncated to the context length with EOT forced last, zero-padded.
The vocabulary (`bpe_simple_vocab_16e6.txt.gz`, OpenAI's, MIT licence) ships in `assets/`.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path
from typing import Iterable

import ftfy
import numpy as np
import regex

VOCAB_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
NUM_MERGES = 49152 - 256 - 2  # open_clip uses merges[1 : 49152 - 256 - 2 + 1]
DEFAULT_CONTEXT_LENGTH = 77


@functools.lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable unicode character, so BPE never sees whitespace or control bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


def clean_text(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class SimpleTokenizer:
    def __init__(self, vocab_path: str | Path = VOCAB_PATH, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.context_length = context_length
        self.byte_encoder = bytes_to_unicode()
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            merges = f.read().split("\n")[1 : NUM_MERGES + 1]
        merges = [tuple(m.split()) for m in merges]
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self.vocab_size = len(self.encoder)
        special = "|".join(map(regex.escape, [SOT_TOKEN, EOT_TOKEN]))
        self.pattern = regex.compile(
            special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in regex.findall(self.pattern, clean_text(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        return bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> np.ndarray:
        """list[str] -> int32 [N, context_length]."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out


@functools.lru_cache()
def get_tokenizer(model_name: str | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH) -> SimpleTokenizer:
    """open_clip's `get_tokenizer`: every supported CLIP uses the same BPE tokenizer.

    `model_name` is accepted for open_clip compatibility and validated against the registry.
    """
    if model_name is not None:
        from georsclip_jax.models.configs import get_model_config

        context_length = get_model_config(model_name).text.context_length
    return SimpleTokenizer(context_length=context_length)
