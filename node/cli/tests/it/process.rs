//! `poi` processes for the tests: spawned with their log lines collected,
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use poi_artifact::Keypair;

pub struct Process {
    pub child: Child,
    lines: Receiver<String>,
}

impl Process {
    /// Spawns `command` with its stderr (the log) collected line by line.
    pub fn spawn(mut command: Command) -> Self {
        command.env("RUST_LOG", "info").env("NO_COLOR", "1").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("poi starts");
        let (sender, lines) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self { child, lines }
    }

    /// The first log line containing `needle`, within `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `poi node --dev` on loopback with RPC on a free port and no RPC rate
/// limits, and `extra` arguments.
pub fn node(spec: &Path, key: &Path, data: &Path, bootnode: Option<&str>, extra: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_poi"));
    command
        .args(["node", "--dev", "--rpc", "127.0.0.1:0", "--rpc-rate", "0", "--rpc-rate-per-connection", "0"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--chain"])
        .arg(spec)
        .arg("--key")
        .arg(key)
        .arg("--data")
        .arg(data)
        .args(extra);
    if let Some(bootnode) = bootnode {
        command.args(["--bootnode", bootnode]);
    }
    Process::spawn(command)
}

pub fn write_key(path: &Path, key: &Keypair) {
    let file = serde_json::json!({"public_key": key.public().to_hex(), "secret_key": hex::encode(key.secret())});
    std::fs::write(path, file.to_string()).unwrap();
}

/// `needle=value` in a tracing line, up to the next space.
pub fn field<'a>(line: &'a str, needle: &str) -> &'a str {
    let start = line.find(needle).unwrap_or_else(|| panic!("{needle} in {line}")) + needle.len();
    line[start..].split([' ', ',', ']', ')']).next().unwrap()
}
