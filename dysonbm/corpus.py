"""Text for the character-level transformer: a user's file, or a generated corpus with structure.

The default corpus is drawn by a seeded stochastic grammar, so that nothing is downloaded and
every run (and test) sees the same text for the same seed:

* a vocabulary of pronounceable words (consonant–vowel syllables) in three classes (nouns,
  verbs, adjectives), each drawn with Zipf–Mandelbrot frequencies ``p_k ∝ (k + 2.7)^-1.1``;
* sentences ``Det [Adj] Noun [that Verb Det Noun] Verb [Det [Adj] Noun] [Adv] .`` with number
  agreement: a plural subject takes ``some``/``the`` and a plural noun (``-s``), and its main
  verb agrees with it (singular ``-s``) across the relative clause (long-range agreement);
* a topic noun per paragraph that recurs in it (structure beyond one sentence).

A model that learns nothing predicts the characters at their frequencies: ``unigram_entropy``
(bits per character) is the bar its validation loss must clear. This module imports no jax.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

import numpy as np

CONSONANTS = "bcdfghklmnprstvz"
VOWELS = "aeiou"
ADVERBS = ("now", "again", "slowly", "here", "today")
ZIPF_SHIFT, ZIPF_EXPONENT = 2.7, 1.1


class CorpusError(ValueError):
    """A text file that cannot be used as a corpus (the message says why)."""


def _words(rng: np.random.Generator, count: int, syllables: tuple[int, int], taken: set) -> list[str]:
    out = []
    while len(out) < count:
        n = int(rng.integers(syllables[0], syllables[1] + 1))
        w = "".join(CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(n))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _zipf(count: int) -> np.ndarray:
    p = (np.arange(count) + ZIPF_SHIFT) ** -ZIPF_EXPONENT
    return p / p.sum()


def generate(n_chars: int = 200_000, seed: int = 0, nouns: int = 300, verbs: int = 120, adjectives: int = 80) -> str:
    """``n_chars`` characters of the seeded grammar (module doc); the same seed, the same text."""
    if n_chars < 1:
        raise ValueError(f"n_chars = {n_chars}: must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    taken = {"the", "a", "some", "that"} | set(ADVERBS)
    # nouns end in a vowel so the plural -s reads as a suffix; verbs get -s when singular
    noun = _words(rng, nouns, (1, 3), taken)
    verb = _words(rng, verbs, (1, 2), taken)
    adj = _words(rng, adjectives, (2, 3), taken)
    p_noun, p_verb, p_adj = _zipf(nouns), _zipf(verbs), _zipf(adjectives)

    def pick(words, p):
        return words[int(rng.choice(len(words), p=p))]

    def noun_phrase(topic=None, plural=None):
        plural = bool(rng.random() < 0.35) if plural is None else plural
        det = ("some" if rng.random() < 0.5 else "the") if plural else ("a" if rng.random() < 0.4 else "the")
        head = topic if topic is not None and rng.random() < 0.4 else pick(noun, p_noun)
        words = [det] + ([pick(adj, p_adj)] if rng.random() < 0.3 else []) + [head + ("s" if plural else "")]
        return words, plural

    def verb_form(plural):
        return pick(verb, p_verb) + ("" if plural else "s")

    parts, size = [], 0
    while size < n_chars:
        topic = pick(noun, p_noun)
        sentences = []
        for _ in range(int(rng.integers(2, 6))):
            subject, plural = noun_phrase(topic)
            words = list(subject)
            if rng.random() < 0.3:  # relative clause between the subject and its verb
                obj, _ = noun_phrase()
                words += ["that", verb_form(plural)] + obj
            words.append(verb_form(plural))
            if rng.random() < 0.7:
                words += noun_phrase(topic)[0]
            if rng.random() < 0.2:
                words.append(ADVERBS[int(rng.integers(len(ADVERBS)))])
            sentence = " ".join(words)
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
        parts.append(" ".join(sentences) + "\n")
        size += len(parts[-1])
    return "".join(parts)[:n_chars]


def read_text(path) -> str:
    """A user's corpus: UTF-8 text of at least two distinct characters; `CorpusError` says why not."""
    p = Path(path)
    if not p.exists():
        raise CorpusError("no such file")
    if p.is_dir():
        raise CorpusError("is a folder, not a text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise CorpusError(f"cannot be read ({err.strerror or type(err).__name__})") from None
    if len(set(text)) < 2:
        raise CorpusError(f"needs at least two distinct characters, has {len(set(text))}")
    return text


def unigram_entropy(text: str) -> float:
    """Plug-in entropy of the character frequencies, bits per character."""
    counts = np.array(list(Counter(text).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


class Encoded:
    """A corpus as integer tokens: ``tokens`` (uint8 when the alphabet fits, else int32),
    ``alphabet`` (token i is ``alphabet[i]``, sorted) and the text's unigram entropy."""

    def __init__(self, text: str):
        self.alphabet = "".join(sorted(set(text)))
        index = {ch: i for i, ch in enumerate(self.alphabet)}
        dtype = np.uint8 if len(self.alphabet) <= 256 else np.int32
        self.tokens = np.fromiter((index[ch] for ch in text), dtype=dtype, count=len(text))
        self.unigram_bits = unigram_entropy(text)

    @property
    def vocab(self) -> int:
        return len(self.alphabet)

    def decode(self, tokens) -> str:
        return "".join(self.alphabet[int(t)] for t in tokens)


@functools.lru_cache(maxsize=8)
def load(text: str = "", n_chars: int = 200_000, seed: int = 0) -> Encoded:
    """The encoded corpus: the file ``text`` if given, else ``generate(n_chars, seed)``."""
    return Encoded(read_text(text) if text else generate(n_chars, seed))


def window_starts(lo: int, hi: int, count: int) -> np.ndarray:
    """``count`` evenly spaced window starts in ``[lo, hi]`` (fixed evaluation windows)."""
    return np.round(np.linspace(lo, hi, count)).astype(np.int32)


def entropy_stderr(text: str) -> float:
    """Standard error of the plug-in entropy for i.i.d. characters, ``sqrt(Var[log2 p]/n)``."""
    counts = np.array(list(Counter(text).values()), dtype=float)
    p = counts / counts.sum()
    logp = np.log2(p)
    var = float((p * logp**2).sum() - (p * logp).sum() ** 2)
    return math.sqrt(var / len(text))
