//! llama.cpp as a miner's engine: `scripts/llama-cpp-logprobs.py` serves its
//! next-token log-probs on the same GGUF, and poi's own top-k, logging and
//! sampler (`poi_model::generate::generate_from`) make the artifact. What the
//! full check says about it is what an operator should expect from a miner
//! that runs another engine.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use poi_model::generate::NextLogprobs;
use poi_model::ModelError;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/llama-cpp-logprobs.py");

pub struct LlamaCpp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    vocab: usize,
}

impl LlamaCpp {
    /// The engine on `model`, or `None` when llama-cpp-python is not
    /// installed (the row is then left out, and the report says so).
    pub fn spawn(model: &Path, vocab: usize) -> anyhow::Result<Option<Self>> {
        let probe = Command::new("python3").args(["-c", "import llama_cpp"]).stderr(Stdio::null()).status();
        if !probe.is_ok_and(|s| s.success()) {
            return Ok(None);
        }
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Some(Self { child, stdin, stdout, vocab }))
    }

    fn ask(&mut self, request: serde_json::Value) -> Result<Vec<f32>, ModelError> {
        let failed = |e: std::io::Error| ModelError::Metadata(format!("llama.cpp engine: {e}"));
        writeln!(self.stdin, "{request}").and_then(|_| self.stdin.flush()).map_err(failed)?;
        let mut bytes = vec![0; self.vocab * 4];
        self.stdout.read_exact(&mut bytes).map_err(failed)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }
}

impl NextLogprobs for LlamaCpp {
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.ask(serde_json::json!({ "start": prompt }))
    }

    fn advance(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        self.ask(serde_json::json!({ "advance": token }))
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
