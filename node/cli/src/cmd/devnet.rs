//! `poi devnet`: N validator nodes on loopback in this process, a generated
//! chain spec, and a miner that submits honest and fraudulent artifacts over
//! JSON-RPC; verdicts are logged as they arrive, then summarised per node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::ws_client::WsClientBuilder;
use poi_artifact::{Artifact, Keypair, Request};
use poi_chain_spec::{devnet_keypair, ChainSpec};
use poi_model::chat::Message;
use poi_model::generate::{generate, prefill_proof, teacher_forced_top_k, Draws, Generated, StopRules};
use poi_model::runtime::Runtime;
use poi_node::clock::now_ms;
use poi_node::config::NodeConfig;
use poi_node::scheduler::{FullChecker, ModelChecker};
use poi_node::service::{self, NodeHandle};
use poi_rpc_api::PoiApiClient;
use poi_rpc_api::SubmitResult;

use poi_cli::ModelArgs;

const PROMPTS: [&str; 4] =
    ["What is a lighthouse?", "Name three primary colours.", "Write a haiku about the sea.", "Why is the sky blue?"];

#[derive(clap::Args)]
pub struct Args {
    /// Validator nodes to start.
    #[arg(long, default_value_t = 4)]
    nodes: u32,
    /// Each validator's chance of fully checking an artifact (the generated
    /// spec's full_check_rate).
    #[arg(long, default_value_t = 0.5)]
    full_check_rate: f64,
    /// Tokens per artifact.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Rounds of the four kinds of artifact (honest, cheap model, pre-fill
    /// seeded, pre-fill unseeded).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// RPC port of the first node; node i listens on PORT + i (0: random
    /// ports).
    #[arg(long, default_value_t = 8545)]
    rpc_port: u16,
    /// Data directory (one folder per node, and chain.json); a temporary one
    /// when omitted.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Stop after the summary instead of serving RPC until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// The cheap model a fraudulent miner runs.
    #[arg(long, default_value = "requant-q2k-cpu")]
    cheap_profile: String,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Honest,
    CheapModel,
    PrefillSeeded,
    PrefillUnseeded,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Honest, Kind::CheapModel, Kind::PrefillSeeded, Kind::PrefillUnseeded];

    fn name(self) -> &'static str {
        match self {
            Self::Honest => "honest",
            Self::CheapModel => "cheap model",
            Self::PrefillSeeded => "pre-fill, seeded",
            Self::PrefillUnseeded => "pre-fill, unseeded",
        }
    }
}

struct Miner {
    key: Keypair,
    pinned: Arc<Runtime>,
    cheap: Runtime,
}

impl Miner {
    fn artifact(&self, spec: &ChainSpec, kind: Kind, prompt: &str, max_tokens: usize) -> anyhow::Result<Artifact> {
        let prompt_tokens = self.pinned.chat_tokens(&[Message { role: "user".into(), content: prompt.to_string() }])?;
        let seeded = kind != Kind::PrefillUnseeded;
        let mut request = Request::new(rand::random(), seeded.then(rand::random), prompt_tokens, max_tokens as u32);
        if seeded {
            // The devnet's requester fixed the seed: the artifact is
            // requester-bound, sampled at the chain's rate.
            request.bind(&spec.chain_id(), &poi_chain_spec::devnet_requester());
        }
        let generator = if kind == Kind::Honest { &self.pinned.model } else { &self.cheap.model };
        let mut external = rand::random::<u64>;
        let draws = match request.run_seed() {
            Some(seed) => Draws::Seeded(seed),
            None => Draws::External(&mut external),
        };
        let stop = StopRules::of(&request);
        let mut generated =
            generate(generator, &request.prompt_tokens, &spec.sampling, spec.logged_k, &stop, draws, |_| {})?;
        if matches!(kind, Kind::PrefillSeeded | Kind::PrefillUnseeded) {
            generated = self.prefill_proof(spec, &request.prompt_tokens, &generated)?;
        }
        let body = generated.body(spec, self.key.public(), request, now_ms())?;
        Ok(body.sign(&self.key))
    }

    /// The pre-fill attack: keep the cheap model's tokens, log the pinned
    /// model's top-k for them as if it had generated them.
    fn prefill_proof(&self, spec: &ChainSpec, prompt: &[u32], cheap: &Generated) -> anyhow::Result<Generated> {
        let tops = teacher_forced_top_k(&self.pinned.model, prompt, &cheap.tokens, &spec.sampling, spec.logged_k)?;
        Ok(prefill_proof(&tops, prompt, &cheap.tokens, cheap.finish_reason, &spec.sampling))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 || args.nodes > 16 {
        bail!("--nodes must be between 1 and 16");
    }
    let spec = ChainSpec::local_devnet(args.nodes, args.full_check_rate)?;
    let (_temp, data) = match &args.data {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir()?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    std::fs::write(data.join("chain.json"), spec.to_json_string())?;

    eprintln!("loading the pinned model and the cheap model ({})", args.cheap_profile);
    let pinned = Arc::new(args.model.load(&spec)?);
    let cheap = ModelArgs { model: args.model.model.clone(), profile: Some(args.cheap_profile.clone()) }.load(&spec)?;
    let checker: Arc<dyn FullChecker> = Arc::new(ModelChecker::new(pinned.clone(), &spec));
    let miner = Miner { key: Keypair::generate(), pinned, cheap };

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let nodes = start_nodes(&args, &spec, &data, checker).await?;
        let result = drive(&args, &spec, &miner, &nodes).await;
        if result.is_ok() && !args.exit {
            eprintln!("\nnodes keep running; try:");
            let rpc = nodes[0].rpc_addr.expect("devnet nodes serve RPC");
            eprintln!(
                "  curl -s http://{rpc} -H 'content-type: application/json' -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"poi_verdictHistory\",\"params\":[]}}'"
            );
            eprintln!("chain spec: {}   Ctrl-C to stop", data.join("chain.json").display());
            tokio::signal::ctrl_c().await?;
        }
        for node in nodes {
            node.stop().await;
        }
        result
    })
}

async fn start_nodes(
    args: &Args,
    spec: &ChainSpec,
    data: &std::path::Path,
    checker: Arc<dyn FullChecker>,
) -> anyhow::Result<Vec<NodeHandle>> {
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..args.nodes {
        let mut config = NodeConfig::new(spec.clone(), devnet_keypair(i), data.join(format!("node{i}")));
        let port = if args.rpc_port == 0 { 0 } else { args.rpc_port + i as u16 };
        config.rpc = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        config.bootnodes = nodes.iter().map(NodeHandle::dial_addr).collect();
        config.checker = Some(checker.clone());
        config.sync_interval = Duration::from_secs(2);
        nodes.push(service::start(config).await.with_context(|| format!("starting node {i}"))?);
    }
    let ports: Vec<String> = nodes.iter().filter_map(|n| n.rpc_addr).map(|a| a.port().to_string()).collect();
    eprintln!("{} validators on 127.0.0.1, RPC ports {}", args.nodes, ports.join(", "));
    Ok(nodes)
}

async fn drive(args: &Args, spec: &ChainSpec, miner: &Miner, nodes: &[NodeHandle]) -> anyhow::Result<ExitCode> {
    let rpc: Vec<SocketAddr> = nodes.iter().map(|n| n.rpc_addr.expect("RPC on")).collect();
    let ws = WsClientBuilder::default().build(format!("ws://{}", rpc[0])).await?;
    let mut verdicts = ws.subscribe_verdicts().await?;
    let mut submitted: Vec<(Kind, String)> = Vec::new();
    let mut refused: Vec<(Kind, String)> = Vec::new();
    for round in 0..args.rounds {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let prompt = PROMPTS[(round * 4 + i) % PROMPTS.len()];
            let artifact = miner.artifact(spec, kind, prompt, args.max_tokens)?;
            let target = rpc[(round * 4 + i) % rpc.len()];
            let client = HttpClientBuilder::default().build(format!("http://{target}"))?;
            let id = artifact.id().to_hex();
            let answer: Result<SubmitResult, _> = client.submit_artifact(hex::encode(artifact.encode())).await;
            match answer {
                Ok(result) => {
                    println!(
                        "submit   {:<20} {}… to {target}: stored, {}",
                        kind.name(),
                        &id[..12],
                        result.verdict.status
                    );
                    submitted.push((kind, id));
                }
                Err(err) => {
                    let reason = match err {
                        jsonrpsee::core::ClientError::Call(call) => call.message().to_string(),
                        other => other.to_string(),
                    };
                    println!("submit   {:<20} {}… to {target}: refused: {reason}", kind.name(), &id[..12]);
                    refused.push((kind, reason));
                }
            }
        }
    }
    // Verdicts settle once every selected check and dispute re-check ran.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), verdicts.next()).await {
            Ok(Some(Ok(record))) => {
                let kind = submitted.iter().find(|(_, id)| *id == record.artifact_id).map_or("?", |(k, _)| k.name());
                println!(
                    "verdict  {:<20} {}… {} ({} votes)",
                    kind,
                    &record.artifact_id[..12],
                    record.status,
                    record.counted_votes.len()
                );
                quiet_since = Instant::now();
            }
            Ok(_) => break,
            Err(_) => {}
        }
        let busy = nodes.iter().any(|n| n.metrics.full_check_queue.get() > 0);
        if !busy && quiet_since.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    summary(&rpc, &submitted, &refused).await
}

async fn summary(
    rpc: &[SocketAddr],
    submitted: &[(Kind, String)],
    refused: &[(Kind, String)],
) -> anyhow::Result<ExitCode> {
    println!(
        "\n{:<20} {:<14} {}",
        "artifact",
        "id",
        (0..rpc.len()).map(|i| format!("{:<22}", format!("node{i}"))).collect::<String>()
    );
    let mut converged = true;
    for (kind, id) in submitted {
        let mut row = Vec::new();
        for addr in rpc {
            let client = HttpClientBuilder::default().build(format!("http://{addr}"))?;
            let record = client.get_verdict(id.clone()).await?;
            row.push(record.map_or("missing".to_string(), |r| format!("{} ({})", r.status, r.counted_votes.len())));
        }
        converged &= row.iter().all(|s| *s == row[0]);
        println!(
            "{:<20} {:<14} {}",
            kind.name(),
            format!("{}…", &id[..12]),
            row.iter().map(|s| format!("{s:<22}")).collect::<String>()
        );
    }
    for (kind, err) in refused {
        println!("{:<20} {:<14} refused at submit by the replay check: {err}", kind.name(), "-");
    }
    println!("\nevery node agrees: {}", if converged { "yes" } else { "NO" });
    Ok(if converged { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
