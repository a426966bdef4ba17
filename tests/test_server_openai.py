"""The server through OpenAI's own client: completions and chat, streamed and not, against the library.

The reference for every text, logprob and count is the library in this process (``Session.complete``,
``Session.chat``, the tokenizer) on a Model of its own: the server must answer what the library
computes for the same request.
"""

from __future__ import annotations

import pytest

from gptj_ggml import Model
from gptj_ggml.server import create_app

from server_fixtures import running_server

GREEDY = {"temperature": 0.0}
PROMPT = "The meaning of life is"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is GPT-J?"}]


@pytest.fixture(scope="module")
def model_path(tiny_model_path):
    return tiny_model_path("f32")


@pytest.fixture(scope="module")
def reference(model_path):
    """The library, in this process, on a Model of its own: a fresh session per call."""
    return Model(model_path)


@pytest.fixture(scope="module")
def server(model_path):
    with running_server(create_app(Model(model_path), n_slots=2)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def test_greedy_completion_is_the_library_completion(client, reference):
    expected = reference.session().complete(PROMPT, max_tokens=16, **GREEDY)

    response = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=16, temperature=0)

    assert response.object == "text_completion" and response.model == "tiny-f32"
    assert response.choices[0].text == expected.text
    assert response.choices[0].finish_reason == "length"


def test_a_prompt_of_token_ids_is_the_same_as_its_text(client, reference):
    ids = reference.tokenize(PROMPT)

    by_text = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=8, temperature=0)
    by_ids = client.completions.create(model="tiny-f32", prompt=ids, max_tokens=8, temperature=0)

    assert by_ids.choices[0].text == by_text.choices[0].text


def test_greedy_chat_reply_is_the_library_chat(client, reference):
    expected = reference.session().chat(MESSAGES, max_tokens=16, **GREEDY).result()

    response = client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=16, temperature=0)

    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == ("stop" if expected.finish_reason in ("stop", "eos") else "length")


def test_a_streamed_completion_joins_to_the_whole_one_and_ends_with_usage(client):
    whole = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=12, temperature=0)

    chunks = list(
        client.completions.create(
            model="tiny-f32",
            prompt=PROMPT,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 12
    assert usage_chunk.usage == whole.usage


def test_a_streamed_chat_starts_with_the_role_and_joins_to_the_whole_reply(client):
    whole = client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=12, temperature=0)

    chunks = list(
        client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=12, temperature=0, stream=True)
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage is None  # usage only when stream_options.include_usage asks


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_stop_string_ends_the_text_before_it(client, reference, stream):
    text = reference.session().complete(PROMPT, max_tokens=24, **GREEDY).text
    stop = text[8:12]  # four characters from inside the greedy text
    expected = text[: text.index(stop)]

    response = client.completions.create(
        model="tiny-f32", prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop], stream=stream
    )

    if stream:
        chunks = list(response)
        got, finish = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
    else:
        got, finish = response.choices[0].text, response.choices[0].finish_reason
    assert (got, finish) == (expected, "stop")


def test_the_same_seed_gives_the_same_sampled_text_as_the_library(client, reference):
    options = {"max_tokens": 16, "temperature": 1.0, "seed": 1234}
    expected = reference.session().complete(PROMPT, **options).text

    first = client.completions.create(model="tiny-f32", prompt=PROMPT, **options).choices[0].text
    second = client.completions.create(model="tiny-f32", prompt=PROMPT, **options).choices[0].text
    other = client.completions.create(model="tiny-f32", prompt=PROMPT, **{**options, "seed": 99}).choices[0].text

    assert first == second == expected
    assert other != first


def test_sampler_extras_and_openai_penalties_reach_the_sampler(client, reference):
    settings = {"top_k": 5, "min_p": 0.1, "repeat_penalty": 1.3, "presence_penalty": 0.5, "frequency_penalty": 0.2}
    expected = reference.session().complete(PROMPT, max_tokens=16, temperature=0.9, seed=5, **settings).text

    response = client.completions.create(
        model="tiny-f32", prompt=PROMPT, max_tokens=16, temperature=0.9, seed=5, extra_body=settings
    )

    assert response.choices[0].text == expected


def test_completion_logprobs_are_the_library_logprobs_and_alternatives(client, reference):
    expected = list(reference.session().generate(PROMPT, max_tokens=6, logprobs=True, top_logprobs=3, **GREEDY))

    logprobs = (
        client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
        .choices[0]
        .logprobs
    )

    assert logprobs.tokens == [token.text for token in expected]
    assert logprobs.token_logprobs == pytest.approx([token.logprob for token in expected], abs=1e-5)
    for alternatives, token in zip(logprobs.top_logprobs, expected):
        want = {reference.detokenize([token_id]): logprob for token_id, logprob in token.top_logprobs}
        assert alternatives == pytest.approx(want, abs=1e-5)
    assert logprobs.text_offset == [sum(len(t.text) for t in expected[:i]) for i in range(len(expected))]


def test_chat_logprobs_give_each_token_its_bytes_logprob_and_top_alternatives(client, reference):
    expected = list(reference.session().chat(MESSAGES, max_tokens=6, logprobs=True, top_logprobs=2, **GREEDY))

    content = (
        client.chat.completions.create(
            model="tiny-f32", messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
        )
        .choices[0]
        .logprobs.content
    )

    assert len(content) == len(expected)
    for entry, token in zip(content, expected):
        assert bytes(entry.bytes) == reference.tokenizer.token_bytes(token.id)
        assert entry.logprob == pytest.approx(token.logprob, abs=1e-5)
        assert [bytes(top.bytes) for top in entry.top_logprobs] == [
            reference.tokenizer.token_bytes(i) for i, _ in token.top_logprobs
        ]
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx(
            [lp for _, lp in token.top_logprobs], abs=1e-5
        )
    # Greedy: the chosen token is the most likely one.
    assert all(entry.top_logprobs[0].token == entry.token for entry in content)


def test_usage_counts_the_prompt_and_generated_tokens_as_the_tokenizer_does(client, reference):
    completion = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=7, temperature=0)
    chat = client.chat.completions.create(
        model="tiny-f32", messages=MESSAGES, max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
    )

    assert completion.usage.prompt_tokens == len(reference.tokenize(PROMPT))
    assert completion.usage.completion_tokens == 7
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 7
    assert chat.usage.prompt_tokens == len(reference.tokenize(reference.chat_template.render(MESSAGES)))


def test_max_completion_tokens_is_max_tokens(client):
    response = client.chat.completions.create(
        model="tiny-f32", messages=MESSAGES, max_completion_tokens=3, temperature=0, extra_body={"ignore_eos": True}
    )

    assert response.usage.completion_tokens == 3 and response.choices[0].finish_reason == "length"


def test_max_tokens_is_capped_by_the_context(client, reference, server):
    n_ctx = server.scheduler.n_ctx
    prompt = reference.tokenize(" word") * (n_ctx - 5)

    response = client.completions.create(
        model="tiny-f32", prompt=prompt, max_tokens=100, temperature=0, extra_body={"ignore_eos": True}
    )

    assert response.usage.completion_tokens == 5 and response.choices[0].finish_reason == "length"


def test_the_models_list_has_the_one_model_and_unknown_fields_are_ignored(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-f32"] and models.data[0].owned_by == "gptj_ggml"

    response = client.completions.create(
        model="tiny-f32", prompt=PROMPT, max_tokens=2, user="someone", extra_body={"tools": [], "no_such_field": 1}
    )
    assert response.usage.completion_tokens == 2
