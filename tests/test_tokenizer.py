"""Our tokenizer equals open_clip's SimpleTokenizer on a corpus of >= 1,000 hard strings."""

from __future__ import annotations

import random

import numpy as np
import open_clip
import pytest

import georsclip_jax as gj

FRAGMENTS = {
    "plain": ["a satellite image of a harbour", "Many planes are parked near the terminal.", "green farmland",
              "dense residential area", "a bridge over the river", "baseball diamond", "storage tanks"],
    "html": ["&amp;", "&lt;b&gt;bold&lt;/b&gt;", "&nbsp;", "&quot;quoted&quot;", "&amp;amp;", "a < b &amp; c",
             "&#39;s", "&eacute;t&eacute;", "&#x1F30D;"],
    "mojibake": ["doesnâ€™t", "cafÃ©", "â€œquoteâ€\x9d", "Ã¼ber", "naÃ¯ve"],
    "control": ["\x00", "\x1c", "\x1f", "\t", "\n\n", "\r\n", "\x0b", "\u200b", "\ufeff", "\x7f"],
    "cjk": ["地图", "衛星画像", "위성 사진", "遥感图像中的机场"],
    "emoji": ["🌍", "🛰️", "👍🏽", "🏞", "❤️‍🔥"],
    "digits": ["2024", "3.14159", "100m", "1st", "No. 42", "x86_64", "١٢٣"],
    "accents": ["café", "cafe\u0301", "Ångström", "Ελλάδα", "Москва", "façade"],
    "punct": ["...", "!!!", "--", "(a)", "[b]", "{c}", "@#$%^", "'s", "'ll", "'re", "I'm", "don't"],
    "space": ["  ", "\u00a0", "\u2003", " \t "],
    "special": ["<start_of_text>", "<end_of_text>", "<|endoftext|>"],
}


def build_corpus(n: int = 1200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = list(FRAGMENTS)
    corpus = ["", " ", "\t\n", "a", "A" * 300, "word " * 100, " ".join(["2024"] * 50)]
    for kind in kinds:  # every fragment on its own
        corpus.extend(FRAGMENTS[kind])
    while len(corpus) < n:
        parts = [rng.choice(FRAGMENTS[rng.choice(kinds)]) for _ in range(rng.randint(1, 12))]
        text = rng.choice([" ", "", "  "]).join(parts)
        if rng.random() < 0.3:
            text = text.upper() if rng.random() < 0.5 else text.title()
        if rng.random() < 0.15:  # captions longer than 77 tokens
            text = " ".join([text] * rng.randint(5, 20))
        corpus.append(text)
    return corpus


def test_corpus_has_the_hard_cases():
    corpus = build_corpus()
    assert len(corpus) >= 1000
    reference = open_clip.tokenizer.SimpleTokenizer()
    assert any(len(reference.encode(t)) > 75 for t in corpus), "no caption over 77 tokens"
    assert "" in corpus


def test_equals_open_clip_on_corpus():
    corpus = build_corpus()
    ours = gj.get_tokenizer()(corpus)
    theirs = open_clip.tokenize(corpus).numpy()
    mismatched = [corpus[i] for i in np.nonzero((ours != theirs).any(1))[0]]
    assert not mismatched, f"{len(mismatched)} strings differ, e.g. {mismatched[:3]!r}"
    assert ours.dtype == np.int32 and ours.shape == (len(corpus), 77)


def test_truncation_keeps_eot_last_and_pads_with_zero():
    tok = gj.get_tokenizer()
    long, short = tok(["word " * 200, "a photo of a cat"])
    assert long[0] == 49406 and long[-1] == 49407 and (long != 0).all()
    np.testing.assert_array_equal(short[:7], [49406, 320, 1125, 539, 320, 2368, 49407])
    assert (short[7:] == 0).all()


@pytest.mark.parametrize("length", [16, 77, 100])
def test_context_length(length):
    texts = ["a satellite image of a harbour with boats " * 5]
    np.testing.assert_array_equal(gj.get_tokenizer()(texts, context_length=length),
                                  open_clip.tokenize(texts, context_length=length).numpy())


def test_decode_inverts_encode():
    tok = gj.get_tokenizer()
    assert tok.decode(tok.encode("a photo of 2 cats")).strip() == "a photo of 2 cats"


def test_model_name_is_validated():
    with pytest.raises(ValueError, match="unknown model name"):
        gj.get_tokenizer("ViT-Q-99")
