"""The named chat templates: the prompt formats of the GPT-J fine-tunes people run.

Each is Jinja source as Hugging Face and llama.cpp store it (``tokenizer.chat_template``),
rendered with ``trim_blocks`` and ``lstrip_blocks`` as transformers renders it, plus the stop
strings that end a reply (what the model writes when it starts the next turn). Variables: the
``messages`` (role ``system``, ``user`` or ``assistant``, and ``content``),
``add_generation_prompt``, ``bos_token``, ``eos_token``, and per template the ones named below.

trim_blocks drops the line break right after a block tag (``{% endif %}``), so every line break
here comes before one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedTemplate:
    source: str
    stop: tuple[str, ...]
    description: str


# Base GPT-J and anything without a format of its own: a transcript it has seen on the web.
PLAIN = NamedTemplate(
    source=(
        "{% for message in messages %}"
        "{% if message.role == 'system' %}{{ message.content }}\n\n"
        "{% elif message.role == 'user' %}User: {{ message.content }}\n"
        "{% else %}Assistant: {{ message.content }}\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    stop=("\nUser:",),
    description="User:/Assistant: transcript (the default, for base GPT-J)",
)

# nomic-ai/gpt4all-j: the GPT4All app's format, with its default instruction when there is no
# system message.
GPT4ALL_J = NamedTemplate(
    source=(
        "### Instruction:\n"
        "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n"
        "{% else %}The prompt below is a question to answer, a task to complete, or a conversation to respond to; "
        "decide which and write an appropriate response.\n{% endif %}"
        "{% for message in messages if message.role != 'system' %}"
        "{% if message.role == 'user' %}### Prompt:\n{{ message.content }}\n"
        "{% else %}### Response:\n{{ message.content }}\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
    stop=("###",),
    description="GPT4All-J: ### Instruction / ### Prompt / ### Response",
)

_ALPACA_INTRO = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

# databricks/dolly-v1-6b: Alpaca's layout, each response closed by "### End".
DOLLY_V1 = NamedTemplate(
    source=(
        "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n\n"
        "{% else %}" + _ALPACA_INTRO + "\n\n{% endif %}"
        "{% for message in messages if message.role != 'system' %}"
        "{% if message.role == 'user' %}### Instruction:\n{{ message.content }}\n\n"
        "{% else %}### Response:\n{{ message.content }}\n\n### End\n\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
    stop=("### End", "\n### Instruction:"),
    description="Dolly v1: Alpaca-style ### Instruction / ### Response, replies end with ### End",
)

# Stanford Alpaca (and the GPT-J models tuned on its data).
ALPACA = NamedTemplate(
    source=(
        "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n\n"
        "{% else %}" + _ALPACA_INTRO + "\n\n{% endif %}"
        "{% for message in messages if message.role != 'system' %}"
        "{% if message.role == 'user' %}### Instruction:\n{{ message.content }}\n\n"
        "{% else %}### Response:\n{{ message.content }}\n\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
    stop=("\n### Instruction:", "\n### Response:"),
    description="Alpaca: ### Instruction / ### Response",
)

# PygmalionAI/pygmalion-6b: a persona (the system message), <START>, then You:/CHARACTER: lines.
# The character's name is the variable `char` (default "Assistant").
PYGMALION = NamedTemplate(
    source=(
        "{% set name = char | default('Assistant') %}"
        "{% if messages and messages[0].role == 'system' %}{{ name }}'s Persona: {{ messages[0].content }}\n{% endif %}"
        "<START>\n"
        "{% for message in messages if message.role != 'system' %}"
        "{% if message.role == 'user' %}You: {{ message.content }}\n"
        "{% else %}{{ name }}: {{ message.content }}\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ name }}:{% endif %}"
    ),
    stop=("\nYou:",),
    description="Pygmalion-6B: CHARACTER's Persona, <START>, You: / CHARACTER: (variable char)",
)

#: Every named template, by the name ``--chat-template`` and ``template=`` take.
TEMPLATES: dict[str, NamedTemplate] = {
    "plain": PLAIN,
    "gpt4all-j": GPT4ALL_J,
    "dolly-v1": DOLLY_V1,
    "alpaca": ALPACA,
    "pygmalion": PYGMALION,
}
DEFAULT_TEMPLATE = "plain"
