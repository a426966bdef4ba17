"""Chat templates: what each named template renders (the fine-tunes' own prompt formats), the
sandbox, where a template comes from, and Model.chat on top of generate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from gptj_ggml import ConversionError, Model
from gptj_ggml.chat import ChatTemplate, ChatTemplateError, named_template, resolve_template
from gptj_ggml.chat_templates import TEMPLATES
from gptj_ggml.convert import convert_checkpoint

from gguf_edit import rewrite_gguf

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is GPT-J?"},
]
ALPACA_INTRO = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

# The formats as their model cards and apps write them.
EXPECTED = {
    "plain": "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: What is GPT-J?\nAssistant:",
    "gpt4all-j": (
        "### Instruction:\nBe brief.\n### Prompt:\nHi\n### Response:\nHello!\n### Prompt:\nWhat is GPT-J?\n### Response:\n"
    ),
    "dolly-v1": (
        "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### End\n\n"
        "### Instruction:\nWhat is GPT-J?\n\n### Response:\n"
    ),
    "alpaca": "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### Instruction:\nWhat is GPT-J?\n\n### Response:\n",
    "pygmalion": "Aqua's Persona: Be brief.\n<START>\nYou: Hi\nAqua: Hello!\nYou: What is GPT-J?\nAqua:",
}


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_named_template_renders_its_fine_tunes_format(name):
    assert named_template(name).render(CONVERSATION, char="Aqua") == EXPECTED[name]


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_named_template_has_stop_strings_its_next_turn_would_start_with(name):
    template = named_template(name)
    assert template.stop
    following = template.render(
        [*CONVERSATION, {"role": "assistant", "content": "A model."}, {"role": "user", "content": "x"}],
        add_generation_prompt=False,
        char="Aqua",
    )
    after_reply = following.split("A model.", 1)[1]
    assert any(stop in after_reply for stop in template.stop)


def test_without_a_system_message_the_instruction_formats_use_their_default_instruction():
    assert named_template("dolly-v1").render(CONVERSATION[1:2]).startswith(ALPACA_INTRO + "\n\n### Instruction:\nHi")
    assert "decide which and write an appropriate response.\n### Prompt:\nHi" in named_template("gpt4all-j").render(
        CONVERSATION[1:2]
    )


def test_the_sandbox_refuses_pythons_internals():
    with pytest.raises(ChatTemplateError, match="unsafe"):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render(CONVERSATION)


def test_a_template_that_does_not_parse_is_named_in_the_error():
    with pytest.raises(ChatTemplateError, match="'broken' does not parse"):
        ChatTemplate("{% for %}", name="broken").render(CONVERSATION)


def test_raise_exception_in_a_template_is_a_chat_template_error():
    template = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}")
    with pytest.raises(ChatTemplateError, match="user first"):
        template.render(CONVERSATION)


@pytest.mark.parametrize(
    "message, problem",
    [({"role": "robot", "content": "x"}, "role"), ({"role": "user", "content": 3}, "content"), ("hi", "mapping")],
)
def test_messages_without_a_known_role_or_text_are_refused(message, problem):
    with pytest.raises(ChatTemplateError, match=rf"messages\[1\].*{problem}"):
        named_template("plain").render([CONVERSATION[1], message])


def test_a_template_is_a_name_or_a_file(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", encoding="utf-8")
    assert resolve_template(str(path)).render(CONVERSATION[1:2]) == "<user>Hi"
    assert resolve_template("alpaca") == named_template("alpaca")
    with pytest.raises(ChatTemplateError, match="neither a named template"):
        resolve_template("no-such-template")


def test_a_file_holding_a_named_templates_source_keeps_its_stop_strings(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATES["dolly-v1"].source, encoding="utf-8")
    assert resolve_template(path).stop == TEMPLATES["dolly-v1"].stop


@pytest.fixture(scope="module")
def model_with_template(tiny_model_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "gpt4all.gguf"
    source = TEMPLATES["gpt4all-j"].source
    return Model(
        rewrite_gguf(
            tiny_model_path("f32"), path, set_kv={"tokenizer.chat_template": (source, gguf.GGUFValueType.STRING)}
        )
    )


def test_a_model_uses_the_template_in_its_file(model_with_template):
    assert model_with_template.chat_template == named_template("gpt4all-j")


def test_a_model_without_one_uses_the_plain_template(tiny_model_path):
    assert Model(tiny_model_path("f32")).chat_template == named_template("plain")


def test_chat_is_generate_on_the_rendered_prompt_with_the_templates_stop_strings(model_with_template):
    model = model_with_template
    prompt = named_template("gpt4all-j").render(CONVERSATION)
    expected = model.complete(prompt, max_tokens=24, temperature=0, stop=["###", "\n\n"])
    reply = model.chat(CONVERSATION, max_tokens=24, temperature=0, stop="\n\n").result()
    assert (reply.tokens, reply.text, reply.finish_reason) == (expected.tokens, expected.text, expected.finish_reason)


def test_chat_text_cannot_inject_end_of_text(tiny_model_path):
    model = Model(tiny_model_path("f32"))
    messages = [{"role": "user", "content": "<|endoftext|>"}]
    prompt_ids = model.tokenize(named_template("plain").render(messages))
    assert model.tokenizer.eos_id not in prompt_ids
    generation = model.chat(messages, max_tokens=2, temperature=0)
    list(generation)
    assert model._session.history[: len(prompt_ids)] == prompt_ids


def _checkpoint_with_config(tiny_gptj_dir, folder, **config) -> Path:
    shutil.copytree(tiny_gptj_dir(), folder)
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **config}), encoding="utf-8")
    return folder


def test_convert_copies_the_checkpoints_chat_template(tiny_gptj_dir, tmp_path):
    source = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    src = _checkpoint_with_config(tiny_gptj_dir, tmp_path / "ckpt", chat_template=source)
    model = Model(convert_checkpoint(src, tmp_path / "m.gguf"))
    assert model.metadata["tokenizer.chat_template"] == source
    assert model.chat_template.render(CONVERSATION[1:2]) == "[user] Hi\n"


def test_convert_takes_the_default_of_several_named_templates(tiny_gptj_dir, tmp_path):
    templates = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ 'plain' }}"}]
    src = _checkpoint_with_config(tiny_gptj_dir, tmp_path / "ckpt", chat_template=templates)
    assert Model(convert_checkpoint(src, tmp_path / "m.gguf")).metadata["tokenizer.chat_template"] == "{{ 'plain' }}"


def test_convert_chat_template_flag_overrides_the_checkpoints(tiny_gptj_dir, tmp_path):
    src = _checkpoint_with_config(tiny_gptj_dir, tmp_path / "ckpt", chat_template="{{ 'theirs' }}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptj_ggml",
            "convert",
            str(src),
            "-o",
            str(tmp_path / "m.gguf"),
            "--chat-template",
            "dolly-v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Model(tmp_path / "m.gguf").chat_template == named_template("dolly-v1")  # its stop strings too


def test_convert_refuses_an_unknown_chat_template_before_writing(tiny_gptj_dir, tmp_path):
    with pytest.raises(ConversionError, match="neither a named template"):
        convert_checkpoint(tiny_gptj_dir(), tmp_path / "m.gguf", chat_template="no-such")
    assert not (tmp_path / "m.gguf").exists()


def test_run_chat_replies_to_each_line_through_the_template(tiny_model_path):
    path = tiny_model_path("f32")
    args = ["run", "-m", str(path), "--chat", "--chat-template", "alpaca", "-p", "Be brief.", "-n", "6", "--temp", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "gptj_ggml", *args],
        input="Hi\nWhat is GPT-J?\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    model = Model(path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    first = model.chat(messages, template="alpaca", max_tokens=6, temperature=0).result().text
    messages += [{"role": "assistant", "content": first.strip()}, {"role": "user", "content": "What is GPT-J?"}]
    second = model.chat(messages, template="alpaca", max_tokens=6, temperature=0).result().text
    assert result.stdout == f"{first}\n{second}\n"
    assert "[turn 2:" in result.stderr and " 0 reused" not in result.stderr.split("[turn 2:")[1]
