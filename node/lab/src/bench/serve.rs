//! `poi serve` throughput at several numbers of concurrent clients, side by
//! side in one run with `poi mine` run once per request (what a miner without
//! a server does: load the model, generate, sign). Both are the real `poi`
//! binary, found beside this one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// `poi mine` runs, one after another.
    #[arg(long, default_value_t = 4)]
    mine_runs: usize,
    /// The `poi` binary; default: beside this one.
    #[arg(long, value_name = "PATH")]
    poi: Option<PathBuf>,
    /// Print one JSON object with every figure on the last line.
    #[arg(long)]
    json: bool,
}

const PROMPT: &str = "Write a short story about a lighthouse keeper who finds a message in a bottle.";

#[derive(Serialize)]
struct Measurement {
    clients: usize,
    requests: usize,
    tokens: usize,
    seconds: f64,
    tokens_per_s: f64,
    requests_per_s: f64,
    vs_mine: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let poi = match &args.poi {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("poi"),
    };
    ensure!(poi.exists(), "{} not found: build it (cargo build --release -p poi) or pass --poi", poi.display());
    ensure!(args.requests > 0 && args.mine_runs > 0, "--requests and --mine-runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("miner.key");
    let made = Command::new(&poi).args(["keys", "generate", "--out"]).arg(&key).output()?;
    ensure!(made.status.success(), "poi keys generate: {}", String::from_utf8_lossy(&made.stderr));

    println!("poi mine, one process per request ({} runs, {} tokens each):", args.mine_runs, args.max_tokens);
    let (mut mine_tokens, started) = (0, Instant::now());
    for seed in 0..args.mine_runs {
        let out = Command::new(&poi)
            .args([
                "mine",
                "--prompt",
                PROMPT,
                "--seed",
                &seed.to_string(),
                "--max-tokens",
                &args.max_tokens.to_string(),
            ])
            .arg("--key")
            .arg(&key)
            .arg("-o")
            .arg(dir.path().join("mined.bin"))
            .output()?;
        ensure!(out.status.success(), "poi mine: {}", String::from_utf8_lossy(&out.stderr));
        mine_tokens += generated_tokens(&String::from_utf8_lossy(&out.stderr))?;
    }
    let mine_seconds = started.elapsed().as_secs_f64();
    let mine_rate = mine_tokens as f64 / mine_seconds;
    println!(
        "  {mine_tokens} tokens in {mine_seconds:.1} s: {mine_rate:.1} tokens/s, {:.2} requests/s",
        args.mine_runs as f64 / mine_seconds
    );

    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let mut server = Command::new(&poi)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--max-batch", &max_clients.to_string()])
        .args(["--queue", &max_clients.max(1).to_string(), "--key"])
        .arg(&key)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let addr = listening_addr(server.stderr.take().context("server stderr")?);
    let measured = addr.and_then(|addr| {
        let model = get_model(addr)?;
        println!("poi serve ({model}), continuous batching, {} requests per setting:", args.requests);
        println!("  clients   tokens   seconds   tokens/s   requests/s   vs poi mine");
        let mut measurements = Vec::new();
        for &clients in &args.clients {
            let m = measure(addr, &model, clients.max(1), &args, mine_rate)?;
            println!(
                "  {:>7}   {:>6}   {:>7.1}   {:>8.1}   {:>10.2}   {:>10.2}x",
                m.clients, m.tokens, m.seconds, m.tokens_per_s, m.requests_per_s, m.vs_mine
            );
            measurements.push(m);
        }
        Ok(measurements)
    });
    let _ = server.kill();
    let _ = server.wait();
    let measurements = measured?;
    if args.json {
        let summary = json!({
            "max_tokens": args.max_tokens,
            "mine": {"runs": args.mine_runs, "tokens": mine_tokens, "seconds": mine_seconds, "tokens_per_s": mine_rate},
            "serve": measurements,
        });
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `generated  N tokens in …` from `poi mine`'s report.
fn generated_tokens(stderr: &str) -> anyhow::Result<usize> {
    let line = stderr.lines().find(|l| l.starts_with("generated")).context("no 'generated' line from poi mine")?;
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).context("unreadable 'generated' line")
}

/// Waits for the server's "serving" log line and reads its address; keeps
/// draining the log so the server never blocks on a full pipe.
fn listening_addr(stderr: std::process::ChildStderr) -> anyhow::Result<SocketAddr> {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving OpenAI-compatible completions") {
                let _ = sender.send(line);
            }
        }
    });
    let line = receiver.recv_timeout(Duration::from_secs(120)).context("poi serve did not start within 120 s")?;
    let start = line.find("addr=").context("no addr in the serving line")? + 5;
    Ok(line[start..].split(' ').next().unwrap_or_default().parse()?)
}

fn get_model(addr: SocketAddr) -> anyhow::Result<String> {
    let models = http(addr, "GET", "/v1/models", None)?;
    models["data"][0]["id"].as_str().map(str::to_string).context("no model in /v1/models")
}

fn measure(addr: SocketAddr, model: &str, clients: usize, args: &Args, mine_rate: f64) -> anyhow::Result<Measurement> {
    let next = AtomicUsize::new(0);
    let tokens = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.requests {
                            return Ok(());
                        }
                        let body = json!({
                            "model": model,
                            "messages": [{"role": "user", "content": PROMPT}],
                            "max_tokens": args.max_tokens,
                            "seed": i,
                        });
                        let answer = http(addr, "POST", "/v1/chat/completions", Some(&body))?;
                        let n = answer["usage"]["completion_tokens"].as_u64().context("no usage in the answer")?;
                        tokens.fetch_add(n as usize, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let tokens = tokens.into_inner();
    Ok(Measurement {
        clients,
        requests: args.requests,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds,
        requests_per_s: args.requests as f64 / seconds,
        vs_mine: tokens as f64 / seconds / mine_rate,
    })
}

/// One HTTP/1.1 exchange on its own connection; the JSON body of a 200.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{method} {path}: {} {body}", head.lines().next().unwrap_or_default());
    }
    Ok(serde_json::from_str(body)?)
}
