//! `poi serve`: an OpenAI-compatible endpoint whose every answer is a signed
//! artifact. The model loads once; concurrent requests share decoding steps
//! (`engine`); each answer is sealed (signed by the miner key) and submitted
//! to the configured nodes, and carries its artifact id.

mod api;
mod engine;
mod respond;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use poi_artifact::{ArtifactId, Keypair, PublicKey, Request, RequestBinding, Signature, REQUEST_DOMAIN};
use poi_chain_spec::ChainSpec;
use poi_model::generate::Generated;
use poi_model::runtime::Runtime;
use poi_rpc_api::PoiApiClient;
use poi_verifier::SeedingClass;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use poi_cli::{ChainArg, ModelArgs};

use self::api::{ApiError, Endpoint, Prepared};
use self::engine::{EngineHandle, Job, Refused, Update};
use self::respond::Transcript;
use crate::keyfile;

#[derive(clap::Args)]
pub struct Args {
    /// Use the embedded devnet spec when no --chain is given.
    #[arg(long)]
    dev: bool,
    #[command(flatten)]
    chain: ChainArg,
    /// Miner key file (`poi keys generate`): signs every artifact.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Address of the HTTP server.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// A node's JSON-RPC URL to submit every artifact to (repeatable); none:
    /// artifacts are only returned.
    #[arg(long = "node", value_name = "RPC_URL")]
    nodes: Vec<String>,
    /// Requests generating together in one decoding step.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Requests waiting for a place in the batch; beyond it, 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Largest request body in bytes; beyond it, 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    #[command(flatten)]
    model: ModelArgs,
}

struct Served {
    /// Requests being parsed and tokenized at once (CPU work off the async
    /// workers, bounded so that a flood of large bodies waits here).
    preparing: tokio::sync::Semaphore,
    spec: ChainSpec,
    runtime: Arc<Runtime>,
    miner: Keypair,
    engine: EngineHandle,
    nodes: Vec<HttpClient>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.chain.chain.is_none() && !args.dev {
        bail!("--chain SPEC is required (or --dev, for the embedded devnet spec)");
    }
    if args.max_batch == 0 || args.queue == 0 {
        bail!("--max-batch and --queue must be at least 1");
    }
    let spec = args.chain.load()?;
    let miner = keyfile::read(&args.key)?;
    let runtime = Arc::new(args.model.load(&spec)?);
    let nodes = args
        .nodes
        .iter()
        .map(|url| {
            HttpClientBuilder::default()
                .request_timeout(Duration::from_secs(10))
                .build(url)
                .with_context(|| format!("--node {url}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let engine = EngineHandle::start(runtime.clone(), spec.sampling, spec.logged_k, args.queue, args.max_batch);
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let preparing = tokio::sync::Semaphore::new(cores);
    let served = Arc::new(Served { preparing, spec, runtime, miner, engine, nodes });
    let router = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/poi/request", post(request_preview))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(args.max_body))
        .with_state(served.clone());
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            model = %api::model_id(&served.spec),
            miner = %served.miner.public(),
            nodes = served.nodes.len(),
            "serving OpenAI-compatible completions"
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("HTTP server")
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn models(State(served): State<Arc<Served>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": api::model_id(&served.spec), "object": "model", "created": 0, "owned_by": "poi"}],
    }))
}

async fn not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, ..ApiError::bad_body("no such endpoint") }
}

async fn chat(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(served, Endpoint::Chat, headers, body).await
}

async fn completions(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(served, Endpoint::Completions, headers, body).await
}

/// The artifact request `poi serve` would build for this chat completion
/// body and these headers, and the digest a requester signs to bind it.
async fn request_preview(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let prepared = prepare(&served, Endpoint::Chat, body).await?;
    let request = build_request(&served.spec, &prepared, &headers, false)?;
    Ok(Json(json!({
        "request_uuid": uuid::Uuid::from_bytes(request.request_uuid).to_string(),
        "user_seed": request.user_seed,
        "prompt_token_ids": request.prompt_tokens,
        "max_tokens": request.max_tokens,
        "stop_token_ids": request.stop_token_ids,
        "chain_id": served.spec.chain_id().to_hex(),
        "binding_digest": request.binding_digest(&served.spec.chain_id()).to_hex(),
    })))
}

async fn prepare(
    served: &Arc<Served>,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than this server accepts".to_string()
        } else {
            rejection.body_text()
        };
        ApiError { status, ..ApiError::bad_body(message) }
    })?;
    let _permit = served.preparing.acquire().await.map_err(|_| ApiError::internal("shutting down"))?;
    let served = served.clone();
    tokio::task::spawn_blocking(move || api::prepare(endpoint, &body, &served.spec, &served.runtime))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the request: {e}")))?
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ApiError::invalid(name, format!("{name} is not ASCII"))))
        .transpose()
}

/// The artifact's request: the requester's uuid and binding when the headers
/// carry them (the signature must verify), else a fresh uuid (miner-seeded).
/// The preview passes `with_binding` false: it builds the unsigned request
/// whose digest the requester is about to sign.
fn build_request(
    spec: &ChainSpec,
    prepared: &Prepared,
    headers: &HeaderMap,
    with_binding: bool,
) -> Result<Request, ApiError> {
    let key = header(headers, "x-poi-requester-key")?;
    let signature = header(headers, "x-poi-requester-signature")?;
    let binds = with_binding && (key.is_some() || signature.is_some());
    let uuid = match header(headers, "x-poi-request-uuid")? {
        Some(text) => uuid::Uuid::parse_str(text)
            .map_err(|e| ApiError::invalid("x-poi-request-uuid", format!("x-poi-request-uuid: {e}")))?,
        None if binds => {
            return Err(ApiError::invalid("x-poi-request-uuid", "a requester binding needs x-poi-request-uuid"))
        }
        None => uuid::Uuid::new_v4(),
    };
    let user_seed = match prepared.user_seed {
        Some(seed) => seed,
        None if binds => return Err(ApiError::invalid("seed", "a requester binding signs the seed: pass seed")),
        None => rand::random(),
    };
    let mut request =
        Request::new(*uuid.as_bytes(), Some(user_seed), prepared.prompt_tokens.clone(), prepared.max_tokens);
    request.stop_token_ids = prepared.stop_token_ids.clone();
    if binds {
        let (Some(key), Some(signature)) = (key, signature) else {
            return Err(ApiError::invalid(
                "x-poi-requester-signature",
                "a requester binding needs both x-poi-requester-key and x-poi-requester-signature",
            ));
        };
        let requester = PublicKey::from_hex(key)
            .map_err(|e| ApiError::invalid("x-poi-requester-key", format!("x-poi-requester-key: {e}")))?;
        let signature = Signature::from_hex(signature)
            .map_err(|e| ApiError::invalid("x-poi-requester-signature", format!("x-poi-requester-signature: {e}")))?;
        request.binding = Some(RequestBinding { requester, signature });
        request.verify_binding(&spec.chain_id()).map_err(|_| {
            ApiError::invalid(
                "x-poi-requester-signature",
                format!(
                    "the requester signature does not verify: sign {REQUEST_DOMAIN:?} || the binding_digest that \
                     POST /v1/poi/request returns for this body and uuid"
                ),
            )
        })?;
    }
    Ok(request)
}

async fn answer(
    served: Arc<Served>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let prepared = prepare(&served, endpoint, body).await?;
    let request = build_request(&served.spec, &prepared, &headers, true)?;
    let (updates, mut received) = mpsc::unbounded_channel();
    served.engine.submit(Job { request: request.clone(), updates }).map_err(|refused| match refused {
        Refused::Busy => ApiError::busy(),
        Refused::Stopped => ApiError::internal("the model engine has stopped; see the server's log"),
    })?;
    let id =
        format!("{}-{}", if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }, uuid::Uuid::new_v4().simple());
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let reply = Reply { served: served.clone(), prepared, request, id, created };
    if reply.prepared.stream {
        let (events, stream) = mpsc::channel::<SseEvent>(16);
        tokio::spawn(async move { reply.stream(&mut received, events).await });
        let stream = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(stream),
            Ok::<_, std::convert::Infallible>,
        );
        return Ok(Sse::new(stream).into_response());
    }
    let mut transcript = reply.transcript();
    let generated = loop {
        match received.recv().await {
            Some(Update::Token { candidates, chosen }) => transcript.push(&candidates, chosen),
            Some(Update::Done(done)) => break done.map_err(ApiError::internal)?,
            None => return Err(ApiError::internal("the engine stopped")),
        }
    };
    let sealed = reply.seal(&generated).await?;
    let finish = respond::finish_reason(generated.finish_reason);
    let text = transcript.text();
    let choice = match endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": transcript.logprobs(0),
            "finish_reason": finish,
        }),
        Endpoint::Completions => {
            json!({"index": 0, "text": text, "logprobs": transcript.logprobs(0), "finish_reason": finish})
        }
    };
    let mut body = reply.envelope(vec![choice]);
    body["usage"] = respond::usage(reply.prepared.prompt_tokens.len(), generated.tokens.len());
    sealed.annotate(&mut body);
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&sealed.id.to_hex()) {
        response.headers_mut().insert("x-poi-artifact-id", value);
    }
    Ok(response)
}

/// One request's answer in the making.
struct Reply {
    served: Arc<Served>,
    prepared: Prepared,
    request: Request,
    id: String,
    created: u64,
}

/// The signed artifact of an answer.
struct Sealed {
    id: ArtifactId,
    seeding: SeedingClass,
    submitted: usize,
}

impl Sealed {
    fn annotate(&self, body: &mut Value) {
        body["poi_artifact_id"] = json!(self.id.to_hex());
        body["poi_seeding"] = json!(self.seeding.to_string());
        body["poi_submitted"] = json!(self.submitted);
    }
}

impl Reply {
    fn transcript(&self) -> Transcript<'_> {
        Transcript::new(
            &self.served.runtime.tokenizer,
            self.prepared.endpoint,
            self.prepared.top_logprobs,
            &self.prepared.stop_token_ids,
        )
    }

    fn envelope(&self, choices: Vec<Value>) -> Value {
        let object = match (self.prepared.endpoint, self.prepared.stream) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": api::model_id(&self.served.spec),
            "system_fingerprint": self.served.spec.numerics.label(),
            "choices": choices,
        })
    }

    /// Signs the artifact and submits it to every configured node at once.
    async fn seal(&self, generated: &Generated) -> Result<Sealed, ApiError> {
        let spec = &self.served.spec;
        let created_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let body = generated
            .body(spec, self.served.miner.public(), self.request.clone(), created_at_ms)
            .map_err(|e| ApiError::internal(format!("building the artifact: {e}")))?;
        let artifact = body.sign(&self.served.miner);
        let id = artifact.id();
        let seeding = SeedingClass::of(&artifact, spec, &spec.chain_id())
            .map_err(|e| ApiError::internal(format!("checking the request binding: {e}")))?;
        let hex_bytes = hex::encode(artifact.encode());
        let submissions = self.served.nodes.iter().map(|node| node.submit_artifact(hex_bytes.clone()));
        let mut submitted = 0;
        for (result, url) in futures::future::join_all(submissions).await.into_iter().zip(0..) {
            match result {
                Ok(_) => submitted += 1,
                Err(err) => tracing::warn!(artifact = %id, node = url, %err, "a node refused or missed the artifact"),
            }
        }
        tracing::info!(artifact = %id, tokens = generated.tokens.len(), %seeding, submitted, "answered");
        Ok(Sealed { id, seeding, submitted })
    }

    /// Streams chunks as tokens come, then a final chunk with the finish
    /// reason and the artifact id (and, when asked, a usage chunk with no
    /// choices), then `[DONE]`.
    /// Returns when the client has gone (the engine then drops the request).
    async fn stream(self, received: &mut mpsc::UnboundedReceiver<Update>, events: mpsc::Sender<SseEvent>) {
        let send = |value: Value| {
            let events = events.clone();
            async move { events.send(SseEvent::default().data(value.to_string())).await.is_ok() }
        };
        let chat = self.prepared.endpoint == Endpoint::Chat;
        let mut transcript = self.transcript();
        if chat && !send(self.envelope(vec![
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        ]))
        .await
        {
            return;
        }
        let generated = loop {
            let update = received.recv().await;
            let at = transcript.len();
            match update {
                Some(Update::Token { candidates, chosen }) => {
                    transcript.push(&candidates, chosen);
                    let text = transcript.unstreamed(false);
                    let choice = self.delta(text, transcript.logprobs(at), Value::Null);
                    if !send(self.envelope(vec![choice])).await {
                        return;
                    }
                }
                Some(Update::Done(Ok(generated))) => break generated,
                Some(Update::Done(Err(message))) => {
                    let _ = send(ApiError::internal(message).body()).await;
                    return;
                }
                None => return,
            }
        };
        let mut last = match self.seal(&generated).await {
            Ok(sealed) => {
                let text = transcript.unstreamed(true);
                let finish = json!(respond::finish_reason(generated.finish_reason));
                let mut chunk = self.envelope(vec![self.delta(text, Value::Null, finish)]);
                sealed.annotate(&mut chunk);
                let mut chunks = vec![chunk];
                // As OpenAI sends it: a last chunk with no choices.
                if self.prepared.include_usage {
                    let mut usage = self.envelope(Vec::new());
                    usage["usage"] = respond::usage(self.prepared.prompt_tokens.len(), generated.tokens.len());
                    sealed.annotate(&mut usage);
                    chunks.push(usage);
                }
                chunks
            }
            Err(err) => vec![err.body()],
        };
        for chunk in last.drain(..) {
            if !send(chunk).await {
                return;
            }
        }
        let _ = events.send(SseEvent::default().data("[DONE]")).await;
    }

    fn delta(&self, text: String, logprobs: Value, finish_reason: Value) -> Value {
        match self.prepared.endpoint {
            Endpoint::Chat => {
                json!({"index": 0, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": finish_reason})
            }
            Endpoint::Completions => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason})
            }
        }
    }
}
