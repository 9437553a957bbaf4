"""Local inference through llama-cpp-python: load a GGUF, fit the context, stream tokens.

Prompts are rendered with the model's own chat template (``tunechat.core.chat_template``), the
same renderer the trainer uses, and sent as raw completions so both sides agree to the byte.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from tunechat.core import chat_template
from tunechat.core.chat_template import ChatMessage
from tunechat.core.gguf_check import ModelFileError, check_gguf_file

DEFAULT_CONTEXT = 2048
DEFAULT_MAX_TOKENS = 512
# A prompt is evaluated in chunks of this many tokens at fixed positions (0, 128, 256, ...), and
# only whole chunks of an earlier prompt are reused: see Engine.stream.
PROMPT_CHUNK = 128
# What ``Engine.embed`` reads of a text: a chat message's first tokens say what it asks.
EMBED_TOKENS = 128


class ModelLoadError(ModelFileError):
    pass


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    seed: int = 0


def default_threads() -> int:
    """Every core this process may run on (llama.cpp's own default is half of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _without_extra_buffer_types() -> Iterator[None]:
    """Load with ``use_extra_bufts = False``.

    On CPUs with AMX, llama.cpp repacks weights into AMX buffers and then segfaults in
    ``ggml_backend_amx_mul_mat`` on the first evaluation (ggml-org/llama.cpp#20824).
    ``Llama.__init__`` does not expose the field, so we wrap the defaults it starts from.
    """
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def patched():  # llama.cpp's ctypes params struct
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    native.llama_model_default_params = patched
    try:
        yield
    finally:
        native.llama_model_default_params = original


_LOAD_LOCK = threading.Lock()


def tokenize_with_vocab(model_path: Path, text: str) -> list[int]:
    """llama.cpp's token ids for ``text`` from a GGUF's vocabulary alone (no weights)."""
    return tokenize_all_with_vocab(model_path, [text])[0]


def tokenize_all_with_vocab(model_path: Path, texts: Sequence[str]) -> list[list[int]]:
    """llama.cpp's token ids for each of ``texts`` (special tokens parsed, no BOS added), the
    GGUF's vocabulary loaded once and no weights."""
    from llama_cpp import Llama

    with _LOAD_LOCK, _without_extra_buffer_types():
        llm = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        return [list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) for text in texts]
    finally:
        llm.close()


@dataclass(frozen=True)
class _Spelling:
    """A vocabulary by the bytes its tokens spell: for following a given answer (greedy_gaps)."""

    exact: dict[bytes, list[int]]  # a token's bytes -> the tokens that spell them
    after_blank: dict[bytes, list[int]]  # the bytes after a token's leading whitespace -> those tokens
    blanks: list[int]  # tokens of whitespace alone (an answer is read stripped)
    ends: list[int]  # the tokens that end a generation
    longest: int

    @classmethod
    def of(cls, llm) -> _Spelling:
        import llama_cpp.llama_cpp as native

        exact: dict[bytes, list[int]] = {}
        after_blank: dict[bytes, list[int]] = {}
        blanks, ends = [], []
        for token in range(llm.n_vocab()):
            if native.llama_vocab_is_eog(llm._model.vocab, token):
                ends.append(token)
            piece = llm.detokenize([token], special=False)
            if not piece:
                continue
            exact.setdefault(piece, []).append(token)
            if not piece.strip():
                blanks.append(token)
            elif piece != piece.lstrip():
                after_blank.setdefault(piece.lstrip(), []).append(token)
        return cls(exact, after_blank, blanks, ends, max(map(len, exact)))

    def next_tokens(self, rest: bytes, first: bool) -> list[tuple[int, int]]:
        """The tokens that spell the start of ``rest``, each with how many of its bytes; the
        answer's ``first`` token may also bring whitespace that stripping took away."""
        steps = [(token, n) for n in range(1, min(self.longest, len(rest)) + 1)
                 for token in self.exact.get(rest[:n], [])]
        if first:
            steps += [(token, n) for n in range(1, min(self.longest, len(rest)) + 1)
                      for token in self.after_blank.get(rest[:n], [])]
            steps += [(token, 0) for token in self.blanks]
        return steps


class Engine:
    """One loaded GGUF model. Generation is not re-entrant: one stream at a time."""

    def __init__(self, model_path: Path, n_ctx: int = DEFAULT_CONTEXT, n_threads: int | None = None,
                 lora_path: Path | None = None) -> None:
        """``lora_path``: a llama.cpp LoRA GGUF (tunechat.convert.lora) applied over ``model_path`` at run time."""
        self.model_path = Path(model_path)
        self.lora_path = Path(lora_path) if lora_path is not None else None
        check_gguf_file(self.model_path)
        if self.lora_path is not None:
            check_gguf_file(self.lora_path)
        self.n_threads = n_threads or default_threads()
        try:
            from llama_cpp import Llama

            with _LOAD_LOCK, _without_extra_buffer_types():
                self._llm = Llama(
                    model_path=str(self.model_path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                    logits_all=False,
                    n_batch=PROMPT_CHUNK,
                )
        except Exception as exc:
            raise ModelLoadError(f"llama.cpp could not load {self.model_path.name}: {exc}") from None
        self._lock = threading.Lock()
        self._adapter = None
        self.adapter_scale = 0.0  # how much of the LoRA adapter the next answer gets (0: the base alone)
        if self.lora_path is not None:
            self._adapter = self._load_adapter(self.lora_path)
            self.set_adapter_scale(1.0)
        meta = self._llm.metadata
        self.n_ctx = self._llm.n_ctx()
        self.template = meta.get("tokenizer.chat_template") or chat_template.CHATML_TEMPLATE
        self.eos_token = self._token_text(self._llm.token_eos())
        self.bos_token = self._token_text(self._llm.token_bos())
        # The last prompt evaluated, and how many of its tokens lie in whole chunks (reusable).
        self._prompt_ids: list[int] = []
        self._whole_chunks = 0
        self.last_reused = 0  # prompt tokens the last answer took from the cache
        self._greedy_answers: dict[tuple[str, int, str | None, float], str] = {}
        self._spelling: _Spelling | None = None  # which tokens spell which bytes (greedy_gaps), read once
        self._embedding_context: tuple[Any, Any] | None = None  # a small context of its own (``embed``)

    # -- run-time LoRA ------------------------------------------------------------------
    def _load_adapter(self, path: Path):  # -> llama.cpp's adapter pointer
        """Load a llama.cpp LoRA GGUF over this model once (the model keeps its mmap, unlike
        ``Llama(lora_path=...)``; llama.cpp frees the adapter with the model)."""
        import llama_cpp.llama_cpp as native

        adapter = native.llama_adapter_lora_init(self._llm._model.model, str(path).encode("utf-8"))
        if not adapter:
            self.close()
            raise ModelLoadError(f"llama.cpp could not apply the adapter {path.name} to {self.model_path.name}.")
        return adapter

    def set_adapter_scale(self, scale: float) -> None:
        """Answer with ``scale`` of the adapter from now on: 1 the personal model, 0 the base
        model alone (the adapter then leaves the graph entirely). Switching costs no reload, and
        no key or value computed under the other weights is reused: every prompt is evaluated
        from an empty context."""
        if self._adapter is None:
            raise ValueError(f"{self.model_path.name} was loaded without an adapter.")
        if scale == self.adapter_scale:
            return
        import ctypes

        import llama_cpp.llama_cpp as native

        with self._lock:
            ctx = self._llm._ctx.ctx
            if scale == 0:
                failed = native.llama_set_adapters_lora(ctx, None, 0, None)
            else:
                adapters = (native.llama_adapter_lora_p_ctypes * 1)(self._adapter)
                scales = (ctypes.c_float * 1)(scale)
                failed = native.llama_set_adapters_lora(ctx, adapters, 1, scales)
            if failed:
                raise ModelLoadError(f"llama.cpp could not set the adapter of {self.model_path.name}.")
            self._forget_prompt()  # keys and values computed under the other weights
            self.adapter_scale = scale

    @property
    def name(self) -> str:
        return self.model_path.name

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    # -- prompts ------------------------------------------------------------------------
    def render(self, messages: Sequence[ChatMessage]) -> str:
        return chat_template.render(
            self.template, messages, add_generation_prompt=True,
            bos_token=self.bos_token, eos_token=self.eos_token,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._tokens(text))

    def fit(self, messages: Sequence[ChatMessage], max_tokens: int) -> list[ChatMessage]:
        """Drop the oldest turns until the prompt plus the answer fits the context window.

        The system prompt and the newest user turn are always kept; when even those do not
        fit, the newest turn is cut from the front so the model sees its end.
        """
        return self._fit(messages, max_tokens)[0]

    def _fit(self, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[list[ChatMessage], list[int]]:
        """The fitted messages and their prompt's token ids (tokenized once in the usual case)."""
        system = [m for m in messages if m["role"] == "system"]
        turns = [m for m in messages if m["role"] != "system"]
        budget = self.n_ctx - max_tokens
        ids = self._tokens(self.render(system + turns))
        while len(turns) > 1 and len(ids) > budget:
            turns = turns[2:] if turns[0]["role"] == "user" and len(turns) > 2 else turns[1:]
            ids = self._tokens(self.render(system + turns))
        if turns and len(ids) > budget:
            last = dict(turns[-1])
            content = self._llm.tokenize(last["content"].encode("utf-8"), add_bos=False, special=False)
            keep = content[max(0, len(ids) - budget + 8):]
            last["content"] = self._llm.detokenize(keep).decode("utf-8", errors="ignore")
            turns = [last]
            ids = self._tokens(self.render(system + turns))
        return system + turns, ids

    def _tokens(self, text: str) -> list[int]:
        return self.tokenize(text)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's token ids for ``text`` (no BOS added; ``special``: parse special tokens)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    # -- generation ---------------------------------------------------------------------
    def stream(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings = GenerationSettings(),
        stop: threading.Event | None = None,
    ) -> Generator[str, None, None]:
        """Yield text deltas of the answer; stops early (keeping what came) when ``stop`` is set.
        Whitespace around the answer is left out (``complete`` joins the deltas): a sentencepiece
        model's first token usually brings the space its pieces carry in front ("▁Your": " Your
        ..."), and Llama 2's template puts one before its end of turn. Whitespace inside the
        answer comes with the text after it."""
        max_tokens = min(settings.max_tokens, self.n_ctx // 2)
        prompt_ids = self._fit(messages, max_tokens)[1]  # token ids: llama.cpp need not tokenize again
        with self._lock:
            self._reuse_prefix_of(prompt_ids)
            chunks = self._llm.create_completion(
                prompt_ids,
                max_tokens=max_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                repeat_penalty=settings.repeat_penalty,
                seed=settings.seed,
                stop=[self.eos_token] if self.eos_token else None,
                stream=True,
            )
            assert isinstance(chunks, Generator)  # stream=True: a generator of chunks
            begun, pending = False, ""  # pending: whitespace held back until text follows it
            try:
                for chunk in chunks:
                    if stop is not None and stop.is_set():
                        break
                    text = pending + chunk["choices"][0]["text"]
                    if not begun:
                        text = text.lstrip()
                    body = text.rstrip()
                    pending = text[len(body):]
                    if body:
                        begun = True
                        yield body
            finally:
                chunks.close()

    def _reuse_prefix_of(self, prompt_ids: list[int]) -> None:
        """Keep the keys and values of the previous prompt's whole chunks that this prompt
        starts with; the rest is evaluated from the next chunk boundary on.

        llama.cpp's arithmetic for a token depends on the batch it is evaluated in (kernels for
        one token and for many round differently), so reusing an arbitrary cached prefix gives
        the same prompt another greedy answer ("L'Étoile, la Marseillaise." once, "L'Alma, la
        France." the next time). Evaluated in chunks at fixed positions, every token of a
        prompt is computed in the same batch whether its chunk was reused or not: an answer
        depends on the prompt and the weights alone, and a long chat still reuses its past.
        Tokens generated one at a time never count as evaluated chunks."""
        usable = min(self._whole_chunks, len(prompt_ids) - 1)
        same = 0
        while same < usable and self._prompt_ids[same] == prompt_ids[same]:
            same += 1
        reuse = same - same % PROMPT_CHUNK
        self.last_reused = reuse
        if reuse == 0:
            self._llm.reset()
        else:
            self._llm.n_tokens = reuse  # llama-cpp-python drops the cache past this and evaluates the rest
        self._prompt_ids = list(prompt_ids)
        self._whole_chunks = len(prompt_ids) - len(prompt_ids) % PROMPT_CHUNK

    def _forget_prompt(self) -> None:
        """The context was used for something else: nothing of it is reused."""
        self._prompt_ids, self._whole_chunks = [], 0
        self._llm.reset()

    def answer_logprobs(self, messages: Sequence[ChatMessage], answer: str,
                        max_tokens: int | None = None) -> list[float]:
        """Log-probability of each token of ``answer`` (tokenized apart, as sampled at inference)
        following the rendered ``messages``, teacher-forced: how likely this model finds a given
        answer, not what it would write."""
        import numpy as np

        prompt_ids = self._tokens(self.render(messages))
        answer_ids = self.tokenize(answer, special=False)[:max_tokens]
        n_vocab = self._llm.n_vocab()
        out: list[float] = []
        with self._lock:
            self._forget_prompt()
            self._llm.eval(prompt_ids)
            for token in answer_ids:
                logits = self._last_logits(n_vocab).astype(np.float64)
                top = logits.max()
                out.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
                self._llm.eval([token])
            self._forget_prompt()
        return out

    def answer_likelihood(self, question: str, answer: str, max_tokens: int = 24) -> float:
        """Mean log-probability per token of ``answer`` (its first ``max_tokens`` tokens) as the
        reply to ``question`` alone in a new chat: how fitting this model finds it there."""
        logprobs = self.answer_logprobs([{"role": "user", "content": question}], answer, max_tokens)
        return sum(logprobs) / max(len(logprobs), 1)

    def greedy_gaps(self, messages: Sequence[ChatMessage], answer: str,
                    settings: GenerationSettings = GenerationSettings()) -> list[float]:
        """How far ``answer`` is from this model's greedy answer to ``messages``, step by step:
        teacher-forced along tokens that spell it (the greedy choice wherever it spells the next
        bytes, else the likeliest token that does), each entry the logit gap between the greedy
        choice and the token taken under the repeat penalty ``stream`` applies (0: the greedy
        choice itself). The last entry is the end's: the end-of-turn token's gap (0 when the
        answer took ``settings.max_tokens``); ``inf`` where no token spells the answer on.
        ``answer`` is read as ``complete`` returns it, stripped of surrounding whitespace."""
        import numpy as np

        llm = self._llm
        spelling = self._spelling or _Spelling.of(llm)
        self._spelling = spelling
        max_tokens = min(settings.max_tokens, self.n_ctx // 2)
        prompt_ids = self._fit(messages, max_tokens)[1]
        rest = spelled = answer.strip().encode("utf-8")
        taken: list[int] = []
        gaps: list[float] = []
        with self._lock:
            self._forget_prompt()
            llm.eval(prompt_ids)
            while True:
                logits = self._last_logits(llm.n_vocab()).astype(np.float64)
                seen = np.unique(np.array(taken[-llm.last_n_tokens_size:], dtype=np.int64))
                if seen.size:  # llama.cpp's repeat penalty, over the tokens generated so far
                    logits[seen] = np.where(logits[seen] > 0, logits[seen] / settings.repeat_penalty,
                                            logits[seen] * settings.repeat_penalty)
                best = float(logits.max())
                if not rest:  # spelled: the end comes next, unless the answer took every token
                    ends = spelling.ends + spelling.blanks  # trailing whitespace was stripped
                    gaps.append(0.0 if len(taken) >= max_tokens else best - float(logits[ends].max()))
                    break
                steps = spelling.next_tokens(rest, first=rest == spelled) if len(taken) < max_tokens else []
                if not steps:  # the answer goes on where greedy decoding could not
                    gaps.append(float("inf"))
                    break
                token, used = max(steps, key=lambda step: logits[step[0]])
                gaps.append(best - float(logits[token]))
                taken.append(token)
                rest = rest[used:]
                llm.eval([token])
            self._forget_prompt()
        return gaps

    def complete(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings()) -> str:
        return "".join(self.stream(messages, settings))  # stripped: stream leaves the whitespace around out

    def greedy(self, question: str, max_tokens: int, system: str | None = None) -> str:
        """The greedy answer to one question (with ``system`` as the system prompt, else the
        template's own), remembered: the weights of a loaded engine never change, and
        verification, evaluation and the report ask the same questions."""
        key = (question, max_tokens, system, self.adapter_scale)
        if key not in self._greedy_answers:
            messages = chat_template.with_system([{"role": "user", "content": question}], system)
            self._greedy_answers[key] = self.complete(messages, GenerationSettings(max_tokens=max_tokens))
        return self._greedy_answers[key]

    def continue_text_samples(self, prompt: str, max_tokens: int, temperature: float, top_p: float,
                              seeds: Sequence[int], stop: Sequence[str] = ()) -> list[str]:
        """Samples of a continuation of raw text (no chat template, e.g. a few-shot prompt), one
        per seed, each the text llama-cpp-python's ``create_completion`` samples for that prompt
        and seed. The prompt is evaluated once (its whole chunks that the previous prompt shared
        are reused: ``_reuse_prefix_of``), not once per sample: each sample starts from its keys,
        values and last logits as they were computed and generates one token at a time, as
        ``create_completion`` does (the prompt is most of a short sample's time)."""
        import ctypes

        import llama_cpp.llama_cpp as native

        llm = self._llm
        bos = [llm.token_bos()] if llm._model.add_bos_token() else []
        prompt_ids = bos + self.tokenize(prompt)
        stops = [s.encode("utf-8") for s in stop]
        out: list[str] = []
        with self._lock:
            self._reuse_prefix_of(prompt_ids)
            llm.eval(prompt_ids[llm.n_tokens:])
            first = self._last_logits(llm.n_vocab()).copy()
            for seed in seeds:
                llm.n_tokens = len(prompt_ids)  # the next eval drops the last sample's keys and values
                ctypes.memmove(llm._ctx.get_logits_ith(-1), first.ctypes.data, first.nbytes)
                llm.set_seed(seed)
                sampler = llm._init_sampler(top_k=40, top_p=top_p, min_p=0.05, typical_p=1.0, temp=temperature,
                                            repeat_penalty=1.0)  # create_completion's defaults
                tokens: list[int] = []
                text = b""
                while len(tokens) < max_tokens:
                    token = sampler.sample(llm._ctx, -1)
                    if native.llama_vocab_is_eog(llm._model.vocab, token):
                        break
                    tokens.append(token)
                    text = llm.detokenize(tokens, prev_tokens=prompt_ids)
                    found = [s for s in stops if s in text]
                    if found:
                        text = text[:text.index(found[0])]
                        break
                    llm.eval([token])
                out.append(text.decode("utf-8", errors="ignore"))
        return out

    def next_token_logits(self, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """The next-token logits after each token list, one row each (float32), every list
        evaluated from an empty context."""
        import numpy as np

        n_vocab = self._llm.n_vocab()
        rows = []
        with self._lock:
            for ids in token_lists:
                self._forget_prompt()
                self._llm.eval(list(ids))
                rows.append(self._last_logits(n_vocab).astype(np.float32).copy())
            self._forget_prompt()
        return np.stack(rows)

    def _last_logits(self, n_vocab: int) -> np.ndarray:
        # Without logits_all, llama-cpp-python keeps no scores: read the context's last row.
        import numpy as np

        return np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(n_vocab,))

    # -- representations ----------------------------------------------------------------
    @property
    def embedding_width(self) -> int:
        return int(self._llm.n_embd())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The base model's mean-pooled last hidden state of each text (float64 rows of unit
        length), from a small context of its own on the same weights: no adapter, no prompt of
        the chat's evicted, no second copy of the model."""
        import numpy as np

        rows = []
        with self._lock:
            context, batch = self._embedding_context or self._open_embedding_context()
            n_embd = self.embedding_width
            for text in texts:
                ids = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:EMBED_TOKENS]
                if not ids:  # an empty message, with a vocabulary that has no BOS
                    rows.append(np.zeros(n_embd))
                    continue
                context.kv_cache_clear()
                batch.reset()
                batch.add_sequence(ids, 0, logits_all=True)
                context.decode(batch)
                row = np.ctypeslib.as_array(context.get_embeddings_seq(0), shape=(n_embd,)).astype(np.float64)
                rows.append(row / (np.linalg.norm(row) or 1.0))
        return np.stack(rows) if rows else np.zeros((0, self.embedding_width))

    def _open_embedding_context(self):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext
        from llama_cpp._utils import suppress_stdout_stderr

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = EMBED_TOKENS
        params.n_threads = params.n_threads_batch = self.n_threads
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        with _LOAD_LOCK, suppress_stdout_stderr(disable=False):  # llama.cpp says which pooling it was given
            context = LlamaContext(model=self._llm._model, params=params, verbose=False)
        batch = LlamaBatch(n_tokens=EMBED_TOKENS, embd=0, n_seq_max=1, verbose=False)
        self._embedding_context = (context, batch)
        # ``use_threads`` may have run while it opened: take the count it set
        llama_cpp.llama_set_n_threads(context.ctx, self.n_threads, self.n_threads)
        return self._embedding_context

    def use_threads(self, n_threads: int) -> None:
        """Evaluate on ``n_threads`` threads from the next token on, in the chat's context and
        the embeddings'. With another process busy on every core (a training run), llama.cpp's
        threads wait for each other at every step: one thread is then several times faster.
        Safe while another thread generates: llama.cpp reads the count at each evaluation."""
        import llama_cpp

        self.n_threads = n_threads
        self._llm.context_params.n_threads = self._llm.context_params.n_threads_batch = n_threads
        contexts = [self._llm._ctx] + ([self._embedding_context[0]] if self._embedding_context else [])
        for context in contexts:
            llama_cpp.llama_set_n_threads(context.ctx, n_threads, n_threads)

    def close(self) -> None:
        if self._embedding_context is not None:
            for part in reversed(self._embedding_context):
                with contextlib.suppress(Exception):
                    part.close()
            self._embedding_context = None
        with contextlib.suppress(Exception):
            self._llm.close()
