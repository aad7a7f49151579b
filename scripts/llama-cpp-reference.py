#!/usr/bin/env python3
"""Writes verifier/model/tests/data/llama-cpp-reference.json from llama.cpp and the
pinned GGUF: the tokenization of fixed texts (our tokenizer must match it) and
a greedy continuation of a chat prompt with llama.cpp's five most likely tokens
and their log-probs at each step (our forward pass must come close to them:
the two engines round differently, so the argmax itself may differ where the
top two are close).

Usage: pip install llama-cpp-python && scripts/llama-cpp-reference.py [GGUF]
"""
import json, os, sys
import numpy as np
import llama_cpp

model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/poi/models/SmolLM2-135M-Instruct.Q4_1.gguf")
texts = [
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces and trailing  ",
    "numbers 1234567 and 3.14159, dates 2026-11-25",
    "it's they're we've I'm you'll he'd",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🎉🚀, Ελληνικά",
    "code: fn main() {\n    println!(\"{}\", x + 1);\n}\n\ttabbed\r\nwindows",
    "multiple\n\n\nnewlines    and     spaces",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "special <|endoftext|> in the middle, <file_sep> too",
    "mixed123abc 456def ٣٤٥ arabic digits",
    "a" * 50 + " " + "ab" * 20,
]
llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
cases = []
for text in texts:
    for special in (True, False):
        ids = llm.tokenize(text.encode(), add_bos=False, special=special)
        cases.append({"text": text, "special": special, "ids": ids})
chat = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
prompt = llm.tokenize(chat.encode(), add_bos=False, special=True)
greedy = []
for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, top_k=1):
    greedy.append(token)
    if len(greedy) == 32 or token == llm.token_eos():
        break
top = []
for step in range(len(greedy)):
    logits = np.asarray(llm.scores[len(prompt) + step - 1], dtype=np.float64)
    shifted = logits - logits.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    best = np.argsort(-log_probs, kind="stable")[:5]
    top.append([[int(t), round(float(log_probs[t]), 6)] for t in best])
out = os.path.join(os.path.dirname(__file__), "..", "verifier", "model", "tests", "data", "llama-cpp-reference.json")
with open(out, "w") as f:
    json.dump({"generator": f"llama-cpp-python {llama_cpp.__version__}", "cases": cases,
               "greedy": {"prompt": prompt, "tokens": greedy, "top": top}}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(cases)} tokenizer cases and {len(greedy)} greedy tokens to {out}")
