"""The fixed view prompts of the stage-1 UNet and their CLIP text embeddings.

The official pipeline never runs the text encoder: it loads ``SyncHuman/data/fixed_prompt_embeds_7view/
{normal,clr}_embeds.pt`` (each ``[7, 77, 1024]`` fp16, one row per view of
``["front", "front_right", "right", "back", "left", "front_left", "face"]``) and keeps views
``[0, 2, 3, 4, 6]`` (front, right, back, left, face). The rows are ``last_hidden_state`` of the SD-2.1-unCLIP
``CLIPTextModel`` for ``"a rendering image of 3D human, {view} view, {domain} map."`` (domain ``normal`` /
``color``), tokenized to 77 ids padded with ``"!"`` (id 0), no attention mask.

This module can (a) load the official ``.pt`` files (``torch.load(weights_only=True)`` only), (b) recompute
the embeddings with a loaded text encoder from token ids that are stored below (so no tokenizer or vocab
file is needed at run time), (c) tokenize any text with our own CLIP BPE given the OpenAI/OpenCLIP
``bpe_simple_vocab_16e6.txt.gz`` or a Hugging Face ``vocab.json`` + ``merges.txt`` (used by the tests
to check the stored ids), and (d) cache embeddings as safetensors.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import CheckpointError, WeightsNotFoundError

__all__ = [
    "BOS_ID",
    "CONTEXT_LENGTH",
    "DOMAINS",
    "EOS_ID",
    "KEPT_VIEW_INDICES",
    "PAD_ID",
    "PROMPT_TEMPLATE",
    "VIEWS_7",
    "ClipBPETokenizer",
    "cfg_prompt_batch",
    "compute_prompt_embeddings",
    "fixed_prompt_token_ids",
    "load_official_prompt_embeds",
    "load_prompt_embeds",
    "save_prompt_embeds",
    "select_views",
    "stage1_prompt_embeddings",
    "view_prompts",
]

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "a rendering image of 3D human, {view} view, {domain} map."
VIEWS_7 = ("front", "front_right", "right", "back", "left", "front_left", "face")
#: Rows of the 7-view files used by the 5 UNet views (front, right, back, left, face).
KEPT_VIEW_INDICES = (0, 2, 3, 4, 6)
#: Stage-1 domain order: normal first, then color. Official file names: normal_embeds.pt, clr_embeds.pt.
DOMAINS = ("normal", "color")
OFFICIAL_FILES = {"normal": "normal_embeds.pt", "color": "clr_embeds.pt"}

CONTEXT_LENGTH = 77
BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
PAD_ID = 0  # "!" -- the SD-2.x tokenizer's pad token (OpenCLIP pads with 0 as well)

#: sha256 of the OpenAI/OpenCLIP ``bpe_simple_vocab_16e6.txt.gz``.
BPE_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

# BPE ids of the words of the template (checked against the CLIP vocab by the tests).
_WORD_IDS: dict[str, tuple[int, ...]] = {
    "a": (320,),
    "rendering": (21339,),
    "image": (2867,),
    "of": (539,),
    "3": (274,),
    "d": (323,),
    "human": (2751,),
    ",": (267,),
    "view": (1093,),
    "map": (3923,),
    ".": (269,),
    "front": (2184,),
    "_": (318,),
    "right": (1155,),
    "back": (893,),
    "left": (1823,),
    "face": (1710,),
    "normal": (5967,),
    "color": (3140,),
}


def view_prompts(domain: str) -> list[str]:
    """The 7 prompts of ``domain`` (``"normal"`` or ``"color"``) in file-row order."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return [PROMPT_TEMPLATE.format(view=v, domain=domain) for v in VIEWS_7]


def _template_words(view: str, domain: str) -> list[str]:
    """The BPE words of one prompt: ``a rendering image of 3 d human , {view...} view , {domain} map .``"""
    view_words: list[str] = []
    for i, part in enumerate(view.split("_")):
        if i:
            view_words.append("_")
        view_words.append(part)
    return ["a", "rendering", "image", "of", "3", "d", "human", ",", *view_words, "view", ",", domain, "map", "."]


def fixed_prompt_token_ids(domain: str) -> torch.Tensor:
    """Token ids ``[7, 77]`` (int64) of the 7 prompts of ``domain``: BOS, words, EOS, then PAD (0)."""
    rows = []
    for view in VIEWS_7:
        ids = [BOS_ID]
        for w in _template_words(view, domain):
            ids.extend(_WORD_IDS[w])
        ids.append(EOS_ID)
        rows.append(ids + [PAD_ID] * (CONTEXT_LENGTH - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


# ------------------------------------------------------------------------------------------------------
# CLIP byte-level BPE (own implementation; reads the standard vocab files)
# ------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable character map of GPT-2/CLIP BPE.

    Printable latin-1 bytes map to themselves; the other 68 bytes map to ``chr(256 + k)`` in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _word_pattern():
    """CLIP pre-tokenizer: special tokens, English contractions, letter runs, single digits, other runs."""
    try:
        import regex

        return regex.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
    except ImportError:  # approximation with the stdlib (identical for ASCII text)
        return re.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
            re.IGNORECASE,
        )


class ClipBPETokenizer:
    """CLIP tokenizer: lower-cased, whitespace-collapsed text -> byte-level BPE ids.

    Text cleaning is ``html.unescape`` + whitespace collapsing + lower-case (OpenAI's reference also runs
    ``ftfy.fix_text``). Identical to transformers' ``CLIPTokenizer`` for plain ASCII text such as our
    prompts; they differ on HTML entities / accents (transformers without ftfy cleans differently) and on
    ``"!"``, which the SD-2.x tokenizer registers as its pad token and so encodes as id 0.
    """

    def __init__(self, merges: Sequence[tuple[str, str]], vocab: dict[str, int] | None = None) -> None:
        self.byte_encoder = _byte_to_unicode()
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        if vocab is None:
            base = list(self.byte_encoder.values())
            tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges]
            tokens += ["<|startoftext|>", "<|endoftext|>"]
            vocab = {t: i for i, t in enumerate(tokens)}
        self.encoder = vocab
        self.decoder = {i: t for t, i in vocab.items()}
        self.bos_id = vocab["<|startoftext|>"]
        self.eos_id = vocab["<|endoftext|>"]
        self._pattern = _word_pattern()
        self._cache: dict[str, list[str]] = {}

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_bpe_file(cls, path: str | os.PathLike, *, check_sha256: bool = False) -> ClipBPETokenizer:
        """From OpenAI/OpenCLIP ``bpe_simple_vocab_16e6.txt.gz`` (first 48,894 merges, as CLIP)."""
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFoundError(f"CLIP BPE vocabulary not found: {p}")
        raw = p.read_bytes()
        if check_sha256:
            import hashlib

            if hashlib.sha256(raw).hexdigest() != BPE_VOCAB_SHA256:
                raise CheckpointError(f"{p} is not the CLIP bpe_simple_vocab_16e6.txt.gz (sha256 differs)")
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
        lines = text.split("\n")[1 : 49152 - 256 - 2 + 1]
        return cls([tuple(line.split()) for line in lines])  # type: ignore[misc]

    @classmethod
    def from_hf_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> ClipBPETokenizer:
        """From a Hugging Face ``CLIPTokenizer`` folder's ``vocab.json`` and ``merges.txt``."""
        for f in (vocab_json, merges_txt):
            if not Path(f).is_file():
                raise WeightsNotFoundError(f"CLIP tokenizer file not found: {f}")
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        return cls(merges, vocab)  # type: ignore[arg-type]

    # -- BPE ----------------------------------------------------------------------------------------
    def _bpe(self, word: str) -> list[str]:
        """Merge the characters of one pre-token (last one marked ``</w>``) by merge rank."""
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            best = min(
                ((self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))),
            )
            rank = best[0]
            if rank == 1 << 30:
                break
            a, b = parts[best[1]], parts[best[1] + 1]
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    @staticmethod
    def clean(text: str) -> str:
        text = html.unescape(html.unescape(text))
        return re.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids without BOS/EOS."""
        ids: list[int] = []
        for tok in self._pattern.findall(self.clean(text)):
            if tok in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.encoder[tok])
                continue
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[p] for p in self._bpe(mapped))
        return ids

    def __call__(self, texts: str | Sequence[str], *, context_length: int = CONTEXT_LENGTH, pad_id: int = PAD_ID):
        """``[N, context_length]`` int64: BOS, ids, EOS, padding (truncated to keep EOS last)."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), context_length), pad_id, dtype=torch.long)
        for r, t in enumerate(texts):
            ids = [self.bos_id, *self.encode(t)][: context_length - 1] + [self.eos_id]
            out[r, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (words separated by single spaces; special tokens kept verbatim)."""
        inv = {c: b for b, c in self.byte_encoder.items()}
        words = "".join(self.decoder[int(i)] for i in ids).split("</w>")
        text = (bytearray(inv[c] for c in w if c in inv).decode("utf-8", errors="replace") for w in words)
        return " ".join(t for t in text if t)


# ------------------------------------------------------------------------------------------------------
# Embeddings
# ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def compute_prompt_embeddings(text_encoder: torch.nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """``last_hidden_state`` of ``text_encoder`` (:class:`~.clip.ClipTextEncoder` or a transformers
    ``CLIPTextModel``) for ``token_ids [N, 77]`` -> ``[N, 77, D]`` (no attention mask, as the official)."""
    p = next(text_encoder.parameters())
    ids = token_ids.to(p.device)
    out = text_encoder(ids) if not hasattr(text_encoder, "get_input_embeddings") else text_encoder(input_ids=ids)
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


def select_views(embeds7: torch.Tensor) -> torch.Tensor:
    """Rows ``[0, 2, 3, 4, 6]`` of a 7-view tensor -> the 5 UNet views (front, right, back, left, face)."""
    if embeds7.shape[0] != len(VIEWS_7):
        raise CheckpointError(f"expected 7 view rows, got shape {tuple(embeds7.shape)}")
    return embeds7[list(KEPT_VIEW_INDICES)]


def stage1_prompt_embeddings(normal7: torch.Tensor, color7: torch.Tensor) -> torch.Tensor:
    """``[10, 77, D]`` = normal views (5) then color views (5), as the pipeline's ``prompt_embeddings``."""
    return torch.cat([select_views(normal7), select_views(color7)], dim=0)


def cfg_prompt_batch(prompt10: torch.Tensor) -> torch.Tensor:
    """CFG batch ``[20, 77, D]`` = ``[normal, normal, color, color]`` (same prompts for uncond and cond)."""
    normal, color = prompt10.chunk(2, dim=0)
    return torch.cat([normal, normal, color, color], dim=0)


def _check_embeds(t: object, source: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 7 or t.shape[1] != CONTEXT_LENGTH:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise CheckpointError(f"{source}: expected a [7, 77, D] tensor of prompt embeddings, got {shape}")
    if not t.is_floating_point() or not torch.isfinite(t).all():
        raise CheckpointError(f"{source}: prompt embeddings must be finite floats")
    return t


def load_official_prompt_embeds(path: str | os.PathLike) -> torch.Tensor:
    """Load an official ``normal_embeds.pt`` / ``clr_embeds.pt`` -> ``[7, 77, 1024]`` (dtype as stored)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(
            f"prompt embedding file not found: {p}. It comes from the official SyncHuman GitHub repository "
            "(SyncHuman/data/fixed_prompt_embeds_7view/); or recompute the embeddings with the text encoder."
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with a clear message
        raise CheckpointError(f"cannot read {p} as a tensor file ({type(e).__name__}: {e}); re-download it") from e
    return _check_embeds(obj, str(p))


def save_prompt_embeds(path: str | os.PathLike, normal7: torch.Tensor, color7: torch.Tensor) -> None:
    """Cache both 7-view tensors in one safetensors file (keys ``normal``, ``color``)."""
    from safetensors.torch import save_file

    _check_embeds(normal7, "normal"), _check_embeds(color7, "color")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"normal": normal7.detach().contiguous().cpu(), "color": color7.detach().contiguous().cpu()},
        str(path),
        metadata={"template": PROMPT_TEMPLATE, "views": ",".join(VIEWS_7)},
    )


def load_prompt_embeds(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a cache written by :func:`save_prompt_embeds` -> ``(normal7, color7)``."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"prompt embedding cache not found: {p}")
    try:
        sd = load_file(str(p))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own untyped errors for damaged files
        raise CheckpointError(f"{p} is damaged ({type(e).__name__}: {e}); delete it so that it is recomputed") from e
    if set(sd) != {"normal", "color"}:
        raise CheckpointError(f"{p}: expected keys 'normal' and 'color', found {sorted(sd)}")
    return _check_embeds(sd["normal"], f"{p}:normal"), _check_embeds(sd["color"], f"{p}:color")
