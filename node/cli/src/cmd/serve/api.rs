//! OpenAI's request bodies as `poi serve` accepts them, checked against the
//! chain: what the chain pins (sampling parameters, `n`) may be restated but
//! not changed, and every refusal names the parameter, in OpenAI's error shape.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use poi_chain_spec::ChainSpec;
use poi_model::chat::Message;
use poi_model::runtime::Runtime;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// An error as OpenAI's API returns it: a status and
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: Some(param.into()), code: None }
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: None, code: None }
    }

    pub fn busy() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server's queue is full; retry later".into(),
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), param: None, code: None }
    }

    fn kind(&self) -> &'static str {
        if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Which endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// A request ready for the engine: the prompt as token ids and the
/// request's own stop rules.
#[derive(Debug)]
pub struct Prepared {
    pub endpoint: Endpoint,
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: u32,
    pub stop_token_ids: Vec<u32>,
    pub user_seed: Option<u64>,
    /// How many of each position's logged candidates to return; `None`: no
    /// logprobs at all.
    pub top_logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(xs) => xs,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields each endpoint understands; anything else is refused by name,
/// so a sampling knob the chain pins cannot be silently ignored.
const COMMON: &[&str] = &[
    "model",
    "max_tokens",
    "stop",
    "seed",
    "n",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "user",
    "logit_bias",
];
const CHAT_ONLY: &[&str] = &["messages", "top_logprobs", "max_completion_tokens"];
const COMPLETIONS_ONLY: &[&str] = &["prompt", "echo", "best_of", "suffix"];

/// The served model's name in `model` and `/v1/models`: the pinned file's
/// name without `.gguf`.
pub fn model_id(spec: &ChainSpec) -> String {
    spec.model.file_name.trim_end_matches(".gguf").to_string()
}

/// Parses and checks a request body for `endpoint` on `spec`'s chain.
pub fn prepare(endpoint: Endpoint, body: &[u8], spec: &ChainSpec, runtime: &Runtime) -> Result<Prepared, ApiError> {
    let fields: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_body(format!("the body is not a JSON object: {e}")))?;
    let only = if endpoint == Endpoint::Chat { CHAT_ONLY } else { COMPLETIONS_ONLY };
    if let Some(unknown) = fields.keys().find(|k| !COMMON.contains(&k.as_str()) && !only.contains(&k.as_str())) {
        let known = COMMON.iter().chain(CHAT_ONLY).chain(COMPLETIONS_ONLY).any(|k| k == unknown);
        let message = if known {
            format!("parameter {unknown:?} is not accepted on this endpoint")
        } else {
            format!("unknown parameter {unknown:?}")
        };
        return Err(ApiError { param: Some(unknown.clone()), ..ApiError::bad_body(message) });
    }
    let get = |name: &'static str| fields.get(name).filter(|v| !v.is_null());

    let model = get("model").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("model", "model is required"))?;
    if model != model_id(spec) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("the model {model:?} does not exist here; this chain serves {:?}", model_id(spec)),
            param: Some("model".into()),
            code: Some("model_not_found"),
        });
    }
    check_pinned(&fields, spec)?;
    if let Some(n) = field::<u32>(&fields, "n")? {
        if n != 1 {
            return Err(ApiError::invalid("n", "n must be 1: each answer is one artifact"));
        }
    }
    if let Some(bias) = field::<Map<String, Value>>(&fields, "logit_bias")? {
        if !bias.is_empty() {
            return Err(ApiError::invalid("logit_bias", "logit_bias is not allowed: the chain pins sampling"));
        }
    }
    let chain_limit = spec.limits.max_generated_tokens;
    let max_tokens = match field::<u32>(&fields, "max_completion_tokens")? {
        Some(n) => n,
        None => field::<u32>(&fields, "max_tokens")?.unwrap_or(chain_limit.min(256)),
    };
    if max_tokens == 0 || max_tokens > chain_limit {
        return Err(ApiError::invalid("max_tokens", format!("max_tokens must be between 1 and {chain_limit}")));
    }
    let user_seed = field::<u64>(&fields, "seed")?;
    let stream = field::<bool>(&fields, "stream")?.unwrap_or(false);
    let include_usage = field::<StreamOptions>(&fields, "stream_options")?.is_some_and(|o| o.include_usage);
    let k = usize::from(spec.logged_k);
    let top_logprobs = match endpoint {
        Endpoint::Chat => {
            let wanted = field::<bool>(&fields, "logprobs")?.unwrap_or(false);
            let top = field::<usize>(&fields, "top_logprobs")?;
            match (wanted, top) {
                (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true")),
                (false, None) => None,
                (true, top) => Some(top.unwrap_or(0)),
            }
        }
        Endpoint::Completions => field::<usize>(&fields, "logprobs")?,
    };
    if let Some(top) = top_logprobs.filter(|&top| top > k) {
        let param = if endpoint == Endpoint::Chat { "top_logprobs" } else { "logprobs" };
        return Err(ApiError::invalid(param, format!("{param} is {top}; the chain logs {k} candidates per position")));
    }
    if endpoint == Endpoint::Completions {
        if let Some(echo) = field::<bool>(&fields, "echo")? {
            if echo {
                return Err(ApiError::invalid("echo", "echo is not supported"));
            }
        }
        if let Some(best_of) = field::<u32>(&fields, "best_of")? {
            if best_of != 1 {
                return Err(ApiError::invalid("best_of", "best_of must be 1"));
            }
        }
        if get("suffix").is_some() {
            return Err(ApiError::invalid("suffix", "suffix is not supported"));
        }
    }

    let prompt_tokens = match endpoint {
        Endpoint::Chat => {
            let messages =
                field(&fields, "messages")?.ok_or_else(|| ApiError::invalid("messages", "messages is required"))?;
            let messages = chat_messages(messages)?;
            runtime.chat_tokens(&messages).map_err(|e| ApiError::invalid("messages", e.to_string()))?
        }
        Endpoint::Completions => {
            let prompt = field::<Prompt>(&fields, "prompt")?;
            match prompt.ok_or_else(|| ApiError::invalid("prompt", "prompt is required"))? {
                Prompt::Text(text) => runtime.tokenizer.encode(&text, false),
                Prompt::Texts(texts) if texts.len() == 1 => runtime.tokenizer.encode(&texts[0], false),
                Prompt::Texts(_) => return Err(ApiError::invalid("prompt", "one prompt per request")),
                Prompt::Tokens(tokens) => {
                    if let Some(&t) = tokens.iter().find(|&&t| t >= spec.model.vocab_size) {
                        return Err(ApiError::invalid("prompt", format!("token {t} is outside the vocabulary")));
                    }
                    tokens
                }
            }
        }
    };
    let prompt_param = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
    if prompt_tokens.is_empty() {
        return Err(ApiError::invalid(prompt_param, "the prompt is empty"));
    }
    let prompt_limit = spec.limits.max_prompt_tokens as usize;
    if prompt_tokens.len() > prompt_limit {
        return Err(ApiError::invalid(
            prompt_param,
            format!("the prompt is {} tokens; the chain's limit is {prompt_limit}", prompt_tokens.len()),
        ));
    }
    let context = spec.model.context_length as usize;
    if prompt_tokens.len() + max_tokens as usize > context {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "the prompt ({} tokens) and max_tokens {max_tokens} exceed the context of {context}",
                prompt_tokens.len()
            ),
        ));
    }
    let stop_token_ids = match field::<OneOrMany<String>>(&fields, "stop")? {
        None => Vec::new(),
        Some(stops) => stop_tokens(stops.into_vec(), runtime)?,
    };
    Ok(Prepared { endpoint, prompt_tokens, max_tokens, stop_token_ids, user_seed, top_logprobs, stream, include_usage })
}

/// A field of the body as `T`; null counts as absent.
fn field<T: serde::de::DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            serde_json::from_value(value.clone()).map(Some).map_err(|e| ApiError::invalid(name, format!("{name}: {e}")))
        }
    }
}

/// Sampling parameters may be restated, never changed: the chain pins them
/// and the replay check refuses any others.
fn check_pinned(fields: &Map<String, Value>, spec: &ChainSpec) -> Result<(), ApiError> {
    let s = &spec.sampling;
    let pinned: [(&'static str, f64); 7] = [
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("top_k", f64::from(s.top_k)),
        ("min_p", s.min_p),
        ("repetition_penalty", s.repetition_penalty),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ];
    for (name, value) in pinned {
        let Some(given) = fields.get(name).filter(|v| !v.is_null()) else { continue };
        // `==` is false for NaN, so anything but the pinned number fails.
        if given.as_f64() != Some(value) {
            return Err(ApiError::invalid(
                name,
                format!("{name} is pinned by the chain at {value}; the request asked for {given}"),
            ));
        }
    }
    Ok(())
}

fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    messages
        .into_iter()
        .map(|m| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                return Err(ApiError::invalid("messages", format!("role {:?} is not supported", m.role)));
            }
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    "messages",
                                    format!("content part {kind:?} is not supported"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            let role = if m.role == "developer" { "system".into() } else { m.role };
            Ok(Message { role, content })
        })
        .collect()
}

/// The artifact's stop rules are token ids: a stop string must be exactly
/// one token of the pinned vocabulary.
fn stop_tokens(stops: Vec<String>, runtime: &Runtime) -> Result<Vec<u32>, ApiError> {
    if stops.len() > poi_artifact::MAX_STOP_TOKENS {
        return Err(ApiError::invalid("stop", format!("at most {} stop sequences", poi_artifact::MAX_STOP_TOKENS)));
    }
    stops
        .iter()
        .map(|stop| match runtime.tokenizer.encode(stop, true).as_slice() {
            [token] => Ok(*token),
            tokens => Err(ApiError::invalid(
                "stop",
                format!("stop sequence {stop:?} is {} tokens; each must be a single token of the model", tokens.len()),
            )),
        })
        .collect()
}
