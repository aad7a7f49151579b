#!/usr/bin/env python3
"""llama.cpp's prompt processing and generation speed on a GGUF, printed as one
JSON object for `poi-lab bench model --llama-cpp`.

Usage: pip install llama-cpp-python
       scripts/bench-llama-cpp.py MODEL.gguf --prefill N --generate M [--threads T]
"""
import argparse, json, time
import llama_cpp

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--prefill", type=int, required=True)
p.add_argument("--generate", type=int, required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--runs", type=int, default=3)
a = p.parse_args()

llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(a.prefill + a.generate + 8, 512), n_batch=512, logits_all=True,
                      n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
tokens = [(i * 7919) % 49000 + 17 for i in range(a.prefill)]

best_pp = float("inf")
for _ in range(a.runs):
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    best_pp = min(best_pp, time.perf_counter() - t)

best_tg = float("inf")
for _ in range(a.runs):
    llm.reset()
    llm.eval(tokens[:32])
    t = time.perf_counter()
    for i in range(a.generate):
        llm.eval([tokens[(32 + i) % len(tokens)]])
    best_tg = min(best_tg, time.perf_counter() - t)

print(json.dumps({"prefill_tokens_per_s": a.prefill / best_pp, "generate_tokens_per_s": a.generate / best_tg,
                  "threads": a.threads}))
