#!/usr/bin/env python3
"""Regenerates node/cli/tests/fixtures/llama-cpp-chat*.json: real chat
completions from another engine (llama.cpp, through llama-cpp-python) on the
pinned GGUF, in OpenAI's format with logprobs and the 20 top log-probs per
position, sampled with the devnet chain's parameters. `poi import` turns it
into unseeded artifacts (node/cli/tests/it/import.rs).

usage: scripts/llama-cpp-fixture.py [GGUF]   (pip install llama-cpp-python==0.3.36)
"""

import json
import os
import sys

from llama_cpp import Llama

here = os.path.dirname(os.path.abspath(__file__))
default = os.path.expanduser("~/.cache/poi/models/SmolLM2-135M-Instruct.Q4_1.gguf")
model = Llama(model_path=sys.argv[1] if len(sys.argv) > 1 else default, n_ctx=2048, n_threads=2,
              logits_all=True, seed=7, verbose=False)
fixtures = os.path.join(here, "..", "node", "cli", "tests", "fixtures")


def fixture(name, question, max_tokens, seed):
    messages = [{"role": "user", "content": question}]
    # The devnet chain's sampling parameters (chain-spec's embedded spec).
    response = model.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0.6, top_k=20, top_p=0.8, min_p=0.0,
        repeat_penalty=1.2, logprobs=True, top_logprobs=20, seed=seed)
    with open(os.path.join(fixtures, name + ".json"), "w") as f:
        json.dump(response, f, indent=1, default=float)  # llama.cpp hands back numpy float32
        f.write("\n")
    with open(os.path.join(fixtures, name + ".messages.json"), "w") as f:
        json.dump(messages, f, indent=1)
        f.write("\n")
    print(name, repr(response["choices"][0]["message"]["content"]))


# Every token of this one resolves in the pinned vocabulary.
fixture("llama-cpp-chat", "What is a lighthouse?", 32, 1)
# llama-cpp-python prints control tokens (and split UTF-8 characters) as "",
# which no vocabulary lookup can resolve: position 33 lists one, and the
# import must refuse it by name.
fixture("llama-cpp-chat-control-token", "Explain in a few sentences why lighthouses are painted in stripes.", 48, 7)
