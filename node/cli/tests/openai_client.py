"""A requester using the official `openai` SDK (and plain urllib for what the
SDK hides) against `poi serve`. Run by node/cli/tests/it/serve.rs, which
checks the answers against the node and the artifacts; prints one JSON
object with everything it saw.

usage: openai_client.py BASE_URL REQUESTER_SECRET_HEX
"""

import concurrent.futures
import json
import sys
import urllib.error
import urllib.request
import uuid

import openai
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

base, requester_secret = sys.argv[1], bytes.fromhex(sys.argv[2])
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
model = client.models.list().data[0].id
messages = [{"role": "user", "content": "What is a lighthouse?"}]
out = {"model": model}


def chat(seed, request_uuid=None, max_tokens=24, headers=None):
    extra = dict(headers or {})
    if request_uuid:
        extra["x-poi-request-uuid"] = request_uuid
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=max_tokens, seed=seed,
        logprobs=True, top_logprobs=20, extra_headers=extra)
    return raw.headers.get("x-poi-artifact-id"), raw.parse().model_dump()


# A chat completion, and the same request (seed and uuid) again: `poi compare`
# must find the two answers identical.
fixed = str(uuid.UUID(int=7))
out["chat_header_id"], out["chat"] = chat(7, fixed)
_, out["chat_again"] = chat(7, fixed)

# A streamed text completion.
stream = client.completions.create(
    model=model, prompt="The lighthouse keeper", max_tokens=16, seed=3, logprobs=5, stream=True,
    stream_options={"include_usage": True})
text, chunks, stream_id, stream_logprobs = "", 0, None, []
for chunk in stream:
    chunks += 1
    for choice in chunk.choices:
        text += choice.text
        if choice.logprobs:
            stream_logprobs.extend(choice.logprobs.token_logprobs)
    stream_id = (chunk.model_extra or {}).get("poi_artifact_id", stream_id)
out["stream"] = {"text": text, "chunks": chunks, "artifact_id": stream_id, "token_logprobs": stream_logprobs}

# Requester binding: sign what POST /v1/poi/request says the request is.
bound_uuid = str(uuid.UUID(int=99))
body = {"model": model, "messages": messages, "max_tokens": 8, "seed": 11}
preview = json.loads(urllib.request.urlopen(urllib.request.Request(
    base + "/v1/poi/request", data=json.dumps(body).encode(),
    headers={"content-type": "application/json", "x-poi-request-uuid": bound_uuid})).read())
key = Ed25519PrivateKey.from_private_bytes(requester_secret)
public = key.public_key().public_bytes_raw().hex()
signature = key.sign(b"poi/request/v1" + bytes.fromhex(preview["binding_digest"])).hex()
bound_id, bound = chat(11, bound_uuid, max_tokens=8, headers={
    "x-poi-requester-key": public, "x-poi-requester-signature": signature})
out["bound"] = {"id": bound_id, "seeding": bound["poi_seeding"], "prompt_token_ids": preview["prompt_token_ids"]}
try:  # the same signature over another seed does not verify
    chat(12, bound_uuid, max_tokens=8, headers={"x-poi-requester-key": public, "x-poi-requester-signature": signature})
    out["forged"] = "accepted"
except openai.BadRequestError as err:
    out["forged"] = err.body.get("param")

# Four requests at once (batched) against the same four one at a time.
uuids = [str(uuid.UUID(int=1000 + i)) for i in range(4)]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    together = list(pool.map(lambda i: chat(20 + i, uuids[i], max_tokens=12)[1], range(4)))
alone = [chat(20 + i, uuids[i], max_tokens=12)[1] for i in range(4)]
out["batched_equal"] = [a["choices"][0]["logprobs"] == b["choices"][0]["logprobs"] for a, b in zip(together, alone)]


def refused(**kwargs):
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, **kwargs)
        return "accepted"
    except openai.APIStatusError as err:
        return [err.status_code, err.body.get("param") if isinstance(err.body, dict) else None]


out["refused"] = {
    "temperature": refused(temperature=1.3),
    "n": refused(n=2),
    "top_logprobs": refused(logprobs=True, top_logprobs=21),
    "stop": refused(stop=["two tokens"]),
    "logit_bias": refused(logit_bias={"42": 5}),
}
try:
    client.chat.completions.create(model="another-model", messages=messages)
    out["refused"]["model"] = "accepted"
except openai.NotFoundError as err:
    out["refused"]["model"] = [err.status_code, err.body.get("code")]

# 413 for a body over the limit, in OpenAI's error shape.
try:
    urllib.request.urlopen(urllib.request.Request(
        base + "/v1/chat/completions", data=b'{"x":"' + b"a" * (2 << 20) + b'"}',
        headers={"content-type": "application/json"}))
    out["oversized"] = "accepted"
except urllib.error.HTTPError as err:
    out["oversized"] = [err.code, "error" in json.loads(err.read())]

# One 900 kB word (quadratic BPE would take hours on it) and a body of
# nothing but control tokens: refused for length, promptly.
for name, text in [("long_word", "x" * 900_000), ("control_tokens", "<|im_end|>" * 90_000)]:
    try:
        urllib.request.urlopen(urllib.request.Request(
            base + "/v1/chat/completions", headers={"content-type": "application/json"},
            data=json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()), timeout=60)
        out[name] = "accepted"
    except urllib.error.HTTPError as err:
        out[name] = [err.code, json.loads(err.read())["error"]["param"]]

# A flood beyond queue + batch gets 503 with Retry-After; the rest are served.
def flood_one(i):
    request = urllib.request.Request(
        base + "/v1/completions", headers={"content-type": "application/json"},
        data=json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": 48, "seed": i}).encode())
    try:
        urllib.request.urlopen(request, timeout=300).read()
        return [200, None]
    except urllib.error.HTTPError as err:
        return [err.code, err.headers.get("Retry-After")]


with concurrent.futures.ThreadPoolExecutor(24) as pool:
    out["flood"] = list(pool.map(flood_one, range(24)))
out["after_flood"] = chat(5, max_tokens=4)[0] is not None

print(json.dumps(out))
