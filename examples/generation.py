"""A tour of the generation API, runnable on the tiny random model (or any GPT-J GGUF):

    python examples/make_tiny_model.py models/tiny
    gptj-ggml convert models/tiny -o models/tiny.gguf
    python examples/generation.py models/tiny.gguf

Each section works as a notebook cell. Random weights write random words; the API is the point.
"""

from __future__ import annotations

import sys

import numpy as np

from gptj_ggml import GREEDY, Model, SamplingParams, probabilities

model = Model(sys.argv[1] if len(sys.argv) > 1 else "models/tiny.gguf")
print(model)

# 1. Streaming with sampling and a stop string. The generation is lazy: each step runs the
#    model for one token; breaking out stops at once.
generation = model.generate("Once upon a time", max_tokens=48, temperature=0.8, top_p=0.95, seed=42, stop=["\n\n"])
for token in generation:
    print(token.text, end="", flush=True)
print(f"\n[{generation.finish_reason}, seed {generation.seed}]")
print(generation.timings)

# 2. The whole result at once, with each token's log-probability.
result = model.complete("The capital of France is", max_tokens=8, temperature=0, logprobs=True)
for token_id, logprob in zip(result.tokens, result.logprobs):
    print(f"{model.detokenize([token_id])!r:>16} {logprob:7.3f}")

# 3. A conversation on its own session: each turn resends the transcript, and only the new
#    text is evaluated (see reused_tokens).
chat = model.session()
transcript = "A friendly chat.\nUser: Hello!\nBot:"
for user_turn in ["What is GPT-J?", "And ggml?"]:
    reply = chat.complete(transcript, max_tokens=24, stop=["\nUser:"], seed=1)
    transcript += reply.text + f"\nUser: {user_turn}\nBot:"
    print(f"reply: {reply.text!r} ({reply.finish_reason}; {reply.timings.reused_tokens} tokens reused, "
          f"{reply.timings.prompt_tokens} evaluated)")

# 4. What the sampler does to a distribution: the probabilities it would draw from.
logits = model.logits(model.tokenize("The weather today is"))[-1]
for name, params in [("greedy", GREEDY), ("default", SamplingParams()), ("top_k=5", SamplingParams(top_k=5))]:
    p = probabilities(logits, params)
    print(f"{name:>8}: {np.count_nonzero(p):5d} candidates, most likely {model.detokenize([int(p.argmax())])!r} p={p.max():.3f}")

# 5. Prompt lookup: tokens guessed from earlier text are verified several per step. The output is
#    the same as without it (greedy here); only the speed changes, where the text repeats itself.
code = "def area(width, height):\n    return width * height\n\n"
plain = model.complete(code + "def area(", max_tokens=24, temperature=0)
fast = model.complete(code + "def area(", max_tokens=24, temperature=0, lookup=8)
assert fast.tokens == plain.tokens
print(f"lookup: {fast.timings.accepted_tokens} of {fast.timings.drafted_tokens} drafted tokens accepted")
