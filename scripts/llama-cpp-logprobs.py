#!/usr/bin/env python3
"""Serves llama.cpp's next-token log-probs on the pinned GGUF, for the
experiment's llama.cpp miner (`poi-lab experiment`): the same sampler and
logging as poi's miner, with llama.cpp as the engine.

Protocol, one request per stdin line, one reply per request on stdout:
  {"start": [token ids]}  evaluate a fresh context
  {"advance": token id}   append one token
each answered by the log-softmax row after the context, as n_vocab
little-endian f32 values.

Usage: pip install llama-cpp-python && scripts/llama-cpp-logprobs.py GGUF [CONTEXT]
"""
import json, sys
import numpy as np
import llama_cpp

model = sys.argv[1]
n_ctx = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)
out = sys.stdout.buffer
for line in sys.stdin:
    request = json.loads(line)
    if "start" in request:
        llm.reset()
        llm.eval(request["start"])
    else:
        llm.eval([request["advance"]])
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    shifted = logits - logits.max()
    row = shifted - np.log(np.exp(shifted).sum())
    out.write(row.astype("<f4").tobytes())
    out.flush()
