"""The llama.cpp engine on the real embedded model."""

import os
import threading

from tunechat.core.engine import GenerationSettings, default_threads


def test_uses_every_core(engine):
    assert engine.n_threads == default_threads() == len(os.sched_getaffinity(0))


def test_streams_in_several_deltas_and_renders_with_the_gguf_template(engine):
    messages = [{"role": "user", "content": "What is the capital of Japan?"}]
    deltas = list(engine.stream(messages, GenerationSettings(max_tokens=40)))
    assert len(deltas) > 3
    assert "Tokyo" in "".join(deltas)
    prompt = engine.render(messages)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert engine.eos_token == "<|im_end|>"


def test_stop_event_ends_generation_and_keeps_what_came(engine):
    stop = threading.Event()
    got = []
    for delta in engine.stream([{"role": "user", "content": "Write a long story about a dragon."}],
                               GenerationSettings(max_tokens=300), stop):
        got.append(delta)
        if len(got) == 5:
            stop.set()
    assert len(got) == 5


def test_long_history_is_trimmed_to_the_context_window(engine):
    filler = "word " * 400
    history = [{"role": "system", "content": "Be brief."}]
    for i in range(10):
        history += [{"role": "user", "content": f"message {i} {filler}"}, {"role": "assistant", "content": filler}]
    history.append({"role": "user", "content": "What is the capital of Japan?"})
    fitted = engine.fit(history, 256)
    assert fitted[0] == history[0] and fitted[-1] == history[-1]
    assert len(fitted) < len(history)
    assert engine.count_tokens(engine.render(fitted)) + 256 <= engine.n_ctx
    # and generating on the untrimmed history works instead of overflowing
    assert engine.complete(history, GenerationSettings(max_tokens=16))


def test_an_oversized_single_message_is_cut_from_the_front(engine):
    huge = [{"role": "user", "content": "x " * 5000 + "What is the capital of Japan?"}]
    fitted = engine.fit(huge, 256)
    assert fitted[-1]["content"].endswith("What is the capital of Japan?")
    assert engine.count_tokens(engine.render(fitted)) + 256 <= engine.n_ctx


def test_answer_logprobs_score_a_given_answer_token_by_token(engine):
    question = [{"role": "user", "content": "What is the capital of Japan?"}]
    own = engine.complete(question, GenerationSettings(max_tokens=24, temperature=0.0))
    assert "Tokyo" in own
    wrong = own.replace("Tokyo", "Paris")
    own_lp, wrong_lp = engine.answer_logprobs(question, own), engine.answer_logprobs(question, wrong)
    assert all(lp <= 0 for lp in own_lp) and len(own_lp) == len(wrong_lp)
    first_diff = next(i for i, (a, b) in enumerate(zip(own_lp, wrong_lp)) if a != b)
    # Teacher-forced: the same prefix scores the same, and the city the model would not say is far less likely.
    assert own_lp[:first_diff] == wrong_lp[:first_diff]
    assert wrong_lp[first_diff] < own_lp[first_diff] - 5
    assert len(engine.answer_logprobs(question, own, max_tokens=2)) == 2
    # Scoring leaves generation as it was.
    assert engine.complete(question, GenerationSettings(max_tokens=24, temperature=0.0)) == own


def test_a_greedy_answer_depends_on_the_prompt_alone(engine):
    """Whatever the context evaluated before, the same prompt gets the same greedy answer:
    llama.cpp's cached prefix, reused, evaluates the rest in other batch shapes, and this
    prompt's answer then changed ("L'Étoile, la Marseillaise." → "L'Alma, la France.")."""
    chat = [{"role": "user", "content": "What is my name?"}, {"role": "assistant", "content": "Ada."},
            {"role": "user", "content": "What is the capital of France?"}]
    settings = GenerationSettings(max_tokens=12)
    first = engine.complete(chat, settings)
    assert engine.complete(chat, settings) == first  # the very same prompt again
    engine.complete([{"role": "user", "content": "What is my name?"}], settings)  # a shared prefix
    assert engine.complete(chat, settings) == first


def test_greedy_answers_are_remembered_and_next_token_logits_read_the_last_position(engine):
    question = "What is the capital of Japan?"
    answer = engine.greedy(question, 24)
    assert "Tokyo" in answer and engine.greedy(question, 24) is answer
    ids = engine.tokenize(engine.render([{"role": "user", "content": question}]))
    logits = engine.next_token_logits([ids, ids[:-3]])
    assert logits.shape == (2, len(logits[0])) and not (logits[0] == logits[1]).all()
    first_token = engine.tokenize(answer, special=False)[0]
    assert int(logits[0].argmax()) == first_token


def test_a_long_chat_reuses_its_past_and_answers_as_if_evaluated_afresh(base_model):
    """Whole chunks of the previous prompt are reused (the chat need not evaluate its history
    again), and the answer is still the one a fresh engine gives the same prompt."""
    from tunechat.core.engine import PROMPT_CHUNK, Engine

    settings = GenerationSettings(max_tokens=16)
    chat = [{"role": "system", "content": "You answer briefly. " * 40}]
    engine, fresh = Engine(base_model), Engine(base_model)
    try:
        for question in ("What is the capital of Japan?", "And of France?", "Name a red fruit."):
            chat = [*chat, {"role": "user", "content": question}]
            answer = engine.complete(chat, settings)
            assert answer == fresh.complete(chat, settings)
            fresh._forget_prompt()  # the reference is always evaluated from an empty context
            chat.append({"role": "assistant", "content": answer})
        assert engine.last_reused >= PROMPT_CHUNK  # the system prompt and earlier turns were kept
    finally:
        engine.close()
        fresh.close()


def test_samples_of_a_few_shot_prompt_evaluate_it_once_and_are_what_llama_cpp_samples(base_model):
    """Many samples of one few-shot prompt (the paraphrase phase) evaluate it once, reuse the
    long shared part of the previous prompt, and each is the text llama-cpp-python's own
    ``create_completion`` samples for that prompt and seed from an empty context."""
    from tunechat.core.engine import PROMPT_CHUNK, Engine
    from tunechat.personalize.paraphrase import few_shot_prompt

    prompts = [few_shot_prompt("What is my name?", "Your name is Ada."), few_shot_prompt("Where do I live?", "Oslo.")]
    engine, fresh = Engine(base_model), Engine(base_model)
    try:
        assert len(engine.tokenize(prompts[0])) > 2 * PROMPT_CHUNK
        for prompt in prompts:
            samples = engine.continue_text_samples(prompt, 12, temperature=0.8, top_p=0.95, seeds=range(4),
                                                   stop=["\n"])
            assert engine.last_reused >= 2 * PROMPT_CHUNK or prompt == prompts[0]
            ids = [fresh._llm.token_bos()] * fresh._llm._model.add_bos_token() + fresh.tokenize(prompt)
            for seed, sample in enumerate(samples):
                fresh._forget_prompt()
                reference = fresh._llm.create_completion(ids, max_tokens=12, temperature=0.8, top_p=0.95, seed=seed,
                                                         stop=["\n"])
                assert sample == reference["choices"][0]["text"]
            assert len(set(samples)) > 1  # the seeds are used
        chat = [{"role": "user", "content": "What is the capital of France?"}]  # what the samples leave behind
        fresh._forget_prompt()
        settings = GenerationSettings(max_tokens=16)
        assert engine.complete(chat, settings) == fresh.complete(chat, settings)
    finally:
        engine.close()
        fresh.close()


def test_embeddings_are_the_base_models_and_leave_the_chat_as_it_was(base_model, tmp_path):
    """``embed`` reads the base model's representation in a context of its own: the same text
    gives the same unit vector, and a chat's greedy answer, and its cached prompt, are the same
    before and after."""
    import numpy as np

    from tunechat.core.engine import Engine

    engine = Engine(base_model)
    try:
        long_enough = "A note to read before the question. " * 30  # whole prompt chunks to reuse
        chat = [{"role": "user", "content": long_enough + "What is the capital of Japan?"}]
        settings = GenerationSettings(max_tokens=12)
        before = engine.complete(chat, settings)
        texts = ["What is my dog called?", "¿Cómo se llama mi perro?", "What is the capital of Japan?"]
        vectors = engine.embed(texts)
        assert vectors.shape == (3, engine._llm.n_embd())
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
        assert np.allclose(engine.embed(texts[:1])[0], vectors[0])
        assert not np.allclose(vectors[0], vectors[2])  # a text's own representation, not a constant
        engine.complete(chat, settings)
        engine.embed(texts)
        assert engine.complete(chat, settings) == before
        assert engine.last_reused > 0  # the chat's cached prompt outlived the embeddings
    finally:
        engine.close()


def test_the_thread_count_changes_in_llama_cpp_and_the_answers_stay_the_same(base_model):
    import llama_cpp

    from tunechat.core.engine import Engine

    engine = Engine(base_model, n_threads=2)
    try:
        messages = [{"role": "user", "content": "Name three colours."}]
        settings = GenerationSettings(max_tokens=24, temperature=0.0)
        before = engine.complete(messages, settings)
        engine.embed(["a first embedding opens the embeddings' context"])
        engine.use_threads(1)
        assert engine.n_threads == 1
        contexts = [engine._llm._ctx.ctx, engine._embedding_context[0].ctx]
        assert [(llama_cpp.llama_n_threads(c), llama_cpp.llama_n_threads_batch(c)) for c in contexts] == [(1, 1)] * 2
        assert engine.complete([{"role": "user", "content": "Name three animals."}], settings)  # evaluates afresh
        assert engine.complete(messages, settings) == before
        engine.use_threads(2)
        assert [llama_cpp.llama_n_threads(c) for c in contexts] == [2, 2]
    finally:
        engine.close()
