"""Run a matcher over a frame of pairs, in two modes.

* ``label``: ONE forward pass per pair, no generation. The decision JSON starts with
  ``{"label": "``, so the student's next-token distribution at that point holds its label
  decision::

      P(match) = p(t_match) / (p(t_match) + p(t_no_match))

  where ``t_match`` and ``t_no_match`` are the first tokens of ``match`` and ``no_match``
  after the prompt and the decision prefix. The pair is a match when P(match) reaches the
  threshold tuned on the validation split (stored in the model folder).
* ``explain``: generate the whole structured decision (greedy), parse it strictly, retry once
  (a larger budget when it was cut off, else one sampled attempt), and record a format
  failure with its reason when both attempts fail. Never a silent default.

:class:`Matcher` loads the model once and is reused; the Spark ``match`` job wraps
:meth:`Matcher.predict_proba` / :meth:`Matcher.explain` in a pandas UDF.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from epm_spark.models.matcher.decision import DecisionFormatError, MatchDecision, parse_decision
from epm_spark.models.matcher.model_folder import MatcherCard, is_model_folder, read_card
from epm_spark.models.matcher.student.prompt import LabelTokens, PairPrompter, encode
from epm_spark.models.matcher.settings import InferenceSettings, PromptSettings
from epm_spark.models.matcher.student.model import load_student, load_tokenizer, resolve_student
from epm_spark.models.precision import resolve_device
from epm_spark.progress import progress

__all__ = ["Matcher", "Explanation", "load_matcher_model", "load_adapted_student", "load_student_folder",
           "generate_texts", "stop_ids"]

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """One pair's explained decision."""

    probability: float  # P(match) from the label tokens (the label mode's number)
    label: str | None  # the generated decision's label; None when the format failed
    decision: MatchDecision | None
    format_valid: bool
    failure: str | None  # why the output failed the schema (after the retry)
    tokens_generated: int  # over every attempt
    attempts: int
    text: str  # the last attempt's raw output


def load_matcher_model(path: str, *, device: str | torch.device = "auto", dtype: str = "auto"):
    """(model, tokenizer, card or None) for a matcher folder or a bare student (zero-shot).

    A folder's adapters are merged into the base one after the other: each was trained on
    the model with the ones before it merged in.
    """
    return load_student_folder(path, is_model_folder, read_card, device=device, dtype=dtype)


def load_student_folder(path: str, is_folder, read, *, device: str | torch.device = "auto", dtype: str = "auto"):
    """(model, tokenizer, card or None): a student model folder of one task (``is_folder``, ``read``
    its card), or a bare student (``packaged:smollm2``, a model folder), zero-shot."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if not is_folder(path):
        model, tokenizer = load_student(resolve_student(path), device=device, dtype=dtype)
        return model, tokenizer, None
    card = read(path)
    model, tokenizer = load_adapted_student(Path(path), card.base, card.adapters, card.merged, device=device,
                                            dtype=dtype)
    return model, tokenizer, card


def load_adapted_student(folder: Path, base: str, adapters: list[str], merged: str | None, *,
                         device: torch.device, dtype: str = "auto"):
    """(model, tokenizer) of a student model folder: its merged weights, or ``base`` with the
    folder's LoRA ``adapters`` merged in one after the other (each was trained on the model with
    the ones before it merged in). Serves every task's student folders (matcher, rewriter)."""
    if merged:
        return load_student(str(folder / merged), device=device, dtype=dtype)
    from peft import PeftModel

    model, tokenizer = load_student(resolve_student(base), device=device, dtype=dtype)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(folder / adapter)).merge_and_unload()
    if (folder / "tokenizer").is_dir():
        tokenizer = load_tokenizer(str(folder / "tokenizer"))
    return model, tokenizer


class Matcher:
    """A student LLM that decides whether two listings are the same product."""

    # Shorter shared prefixes are not worth a cache.
    MIN_PREFIX = 8

    def __init__(self, model, tokenizer, *, prompt: PromptSettings | None = None, card: MatcherCard | None = None,
                 settings: InferenceSettings | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.card = card
        self.settings = settings or InferenceSettings()
        self.prompter = PairPrompter(tokenizer, prompt or PromptSettings())
        self.labels = LabelTokens(tokenizer)
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, path: str, settings: InferenceSettings | None = None) -> Matcher:
        """Load a matcher model folder, or a bare student (``packaged:smollm2``, a model folder) zero-shot."""
        settings = settings or InferenceSettings()
        model, tokenizer, card = load_matcher_model(path, device=settings.device, dtype=settings.dtype)
        prompt = PromptSettings(**card.prompt) if card and card.prompt else PromptSettings()
        return cls(model, tokenizer, prompt=prompt, card=card, settings=settings)

    def threshold(self, benchmark: str | None = None) -> float:
        return self.card.threshold(benchmark) if self.card else 0.5

    # ------------------------------------------------------------------ label mode

    def predict_proba(self, pairs: pd.DataFrame, *, show_progress: bool = False) -> np.ndarray:
        """P(match) per pair from one forward pass each (see the module docstring)."""
        prompts = self.prompter.render_frame(pairs, system=self.prompter.label_system)
        return self.label_probabilities(prompts, show_progress=show_progress)[0]

    def predict_labels(self, pairs: pd.DataFrame, threshold: float | None = None,
                       benchmark: str | None = None) -> np.ndarray:
        """1 for match, 0 for no match, at ``threshold`` (default: the model's tuned threshold)."""
        t = self.threshold(benchmark) if threshold is None else threshold
        return (self.predict_proba(pairs) >= t).astype(np.int8)

    @torch.inference_mode()
    def label_probabilities(self, prompts: list[str], *, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(P(match), label mass) per rendered prompt.

        The label mass p(t_match) + p(t_no_match) is how much of the next-token distribution
        falls on a label at all: near 1 for a trained student, lower zero-shot.
        """
        splits = [self.labels.split(p) for p in prompts]
        probs = np.zeros(len(prompts), dtype=np.float64)
        mass = np.zeros(len(prompts), dtype=np.float64)
        if not prompts:
            return probs, mass
        prefix = self._shared_prefix([s[0] for s in splits])
        # Similar lengths share a batch, so little compute goes to padding.
        order = np.argsort([len(s[0]) for s in splits], kind="stable")
        size = self.settings.batch_size
        batches = [order[i: i + size] for i in range(0, len(order), size)]
        bar = progress(batches, desc="label mode", unit="batch") if show_progress else batches
        for batch in bar:
            logits = self._last_logits([splits[i][0][len(prefix):] for i in batch], prefix)
            logp = torch.log_softmax(logits.float(), dim=-1)
            tm = torch.tensor([splits[i][1] for i in batch], device=logp.device)
            tn = torch.tensor([splits[i][2] for i in batch], device=logp.device)
            lm = logp.gather(1, tm[:, None])[:, 0]
            ln = logp.gather(1, tn[:, None])[:, 0]
            probs[batch] = torch.sigmoid(lm - ln).cpu().numpy()
            mass[batch] = (lm.exp() + ln.exp()).cpu().numpy()
        return probs, mass

    def _shared_prefix(self, ids: list[list[int]]) -> list[int]:
        """The token prefix every prompt shares (the system message), kept one token short of the shortest."""
        first = ids[0]
        k = min(len(x) for x in ids) - 1
        for x in ids[1:]:
            k = next((j for j in range(k) if x[j] != first[j]), k)
        return first[:k] if k >= self.MIN_PREFIX else []

    def _prefix_cache(self, prefix: list[int]):
        """Keys and values of the shared prefix, computed once and reused for every batch."""
        key = tuple(prefix)
        if getattr(self, "_cached_prefix", None) != key:
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            self._prefix_kv = self.model(input_ids=ids, use_cache=True).past_key_values
            self._cached_prefix = key
        return copy.deepcopy(self._prefix_kv)

    def _last_logits(self, suffixes: list[list[int]], prefix: list[int]) -> torch.Tensor:
        """Next-token logits after each ``prefix + suffix`` (suffixes left-padded to one width)."""
        input_ids, attention = self._left_pad(suffixes)
        # A plain forward numbers positions from the cache length on, whatever the mask says; left
        # padding must not shift the real tokens, so positions count each row's real tokens.
        positions = len(prefix) + (attention.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict = {"use_cache": False}
        if prefix:
            cache = self._prefix_cache(prefix)
            cache.batch_repeat_interleave(len(suffixes))
            ones = torch.ones((len(suffixes), len(prefix)), dtype=attention.dtype, device=attention.device)
            attention = torch.cat([ones, attention], dim=1)
            kwargs = {"past_key_values": cache, "use_cache": True}
        try:
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             logits_to_keep=1, **kwargs)
        except TypeError:  # models without logits_to_keep compute every position's logits
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs)
        return out.logits[:, -1, :]

    def _left_pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad(ids, self.tokenizer.pad_token_id, self.device)

    # ------------------------------------------------------------------ explain mode

    def explain(self, pairs: pd.DataFrame, *, show_progress: bool = False) -> list[Explanation]:
        """Generate, parse and validate a full decision per pair."""
        prompts = self.prompter.render_frame(pairs)
        label_prompts = self.prompter.render_frame(pairs, system=self.prompter.label_system)
        probs, _ = self.label_probabilities(label_prompts)
        budget = self.settings.max_new_tokens
        texts, counts = self.generate(prompts, max_new_tokens=budget, show_progress=show_progress)
        results: list[Explanation] = []
        retry: list[int] = []
        for i, (text, n) in enumerate(zip(texts, counts)):
            results.append(self._explanation(probs[i], text, n, attempts=1))
            if not results[-1].format_valid:
                retry.append(i)
        if retry:
            # Cut off: give it twice the room, greedily. Otherwise greedy would repeat itself: sample once.
            cut = [i for i in retry if counts[i] >= budget]
            other = [i for i in retry if counts[i] < budget]
            for idx, kwargs in ((cut, {"max_new_tokens": 2 * budget}),
                                (other, {"max_new_tokens": budget, "sample": True})):
                if not idx:
                    continue
                texts2, counts2 = self.generate([prompts[i] for i in idx], **kwargs)
                for i, text, n in zip(idx, texts2, counts2):
                    results[i] = self._explanation(probs[i], text, counts[i] + n, attempts=2)
        return results

    @staticmethod
    def _explanation(probability: float, text: str, tokens: int, attempts: int) -> Explanation:
        try:
            decision = parse_decision(text, strict=True)
        except DecisionFormatError as exc:
            return Explanation(float(probability), None, None, False, exc.reason, tokens, attempts, text)
        return Explanation(float(probability), decision.label, decision, True, None, tokens, attempts, text)

    def generate(self, prompts: list[str], *, max_new_tokens: int, sample: bool = False,
                 show_progress: bool = False) -> tuple[list[str], list[int]]:
        """(decoded completion, tokens generated) per prompt; greedy unless ``sample``."""
        return generate_texts(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                              batch_size=self.settings.explain_batch_size, sample=sample, show_progress=show_progress,
                              desc="explain mode")


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end an answer: the generation config's EOS ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def left_pad(ids: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists left-padded to one width, and their attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[row, width - len(x):] = 1
    return input_ids.to(device), attention.to(device)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                   sample: bool = False, show_progress: bool = False,
                   desc: str = "generating") -> tuple[list[str], list[int]]:
    """(decoded completion, tokens generated) per rendered prompt; greedy unless ``sample``.

    Prompts of similar length share a batch, so little compute goes to padding.
    """
    encoded = [encode(tokenizer, p) for p in prompts]
    order = np.argsort([len(x) for x in encoded], kind="stable")
    texts: list[str] = [""] * len(prompts)
    counts = [0] * len(prompts)
    eos = stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    bar = progress(batches, desc=desc, unit="batch") if show_progress else batches
    for batch in bar:
        input_ids, attention = left_pad([encoded[i] for i in batch], tokenizer.pad_token_id, device)
        kwargs = {"do_sample": True, "temperature": 0.7, "top_p": 0.95} if sample else {"do_sample": False}
        out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, top_k=None, **kwargs)
        new = out[:, input_ids.shape[1]:].cpu()
        for row, i in enumerate(batch):
            tokens = new[row].tolist()
            stop = next((k + 1 for k, t in enumerate(tokens) if t in eos), len(tokens))
            counts[i] = stop
            texts[i] = tokenizer.decode(tokens[:stop], skip_special_tokens=True)
    return texts, counts
