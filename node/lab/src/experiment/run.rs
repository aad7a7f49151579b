//! Generation and checking, resumable: generated artifacts are cached as
//! canonical bytes, check results as JSON lines, so an interrupted run picks
//! up where it stopped and a rerun with more prompts only does the new ones.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use poi_artifact::{Artifact, FinishReason, Generation, Keypair, Request};
use poi_chain_spec::ChainSpec;
use poi_model::chat::Message;
use poi_model::generate::{generate, prefill_proof, teacher_forced_top_k, Draws, Generated, StopRules};
use poi_model::runtime::Runtime;
use poi_verifier::full_check::compare;
use poi_verifier::replay::{ReplayChecker, ReplayError};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::attack::{repaired_prefill, Repair};
use super::matrix::{Decoding, Output, Run, NATIVE, PREFIX_LENGTHS, TILTS};

#[derive(Clone, Debug, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub kind: String,
    pub prompt: String,
}

/// The replay and surprisal tests on the first `n` positions of an artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrefixRecord {
    pub n: usize,
    /// Whether seeded replay passes (every chosen token is what the run seed
    /// picks); `None` for unseeded artifacts, which have nothing to replay.
    pub replay_ok: Option<bool>,
    /// The surprisal z of the same positions with the seed removed; `None`
    /// when a chosen token is outside the sampler's kept set (always rejected).
    pub z: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairRecord {
    pub pair: String,
    pub distance2: f64,
    pub match_ratio: f64,
    /// The largest single-position summand of `distance2`: an alternative
    /// score that one badly wrong position cannot hide in an average.
    pub max_position_distance: f64,
    /// The chain's own full check (exact under the bit-exact profile: every
    /// list the model's, every seeded pick the logged token).
    pub full_check_accepted: bool,
    pub prefixes: Vec<PrefixRecord>,
    /// The whole artifact's evidence for the per-miner test with its seed
    /// removed, at each of `matrix::TILTS`; empty where the replay check
    /// rejects it unseeded (so no node would store it) or pairs that do not
    /// claim the pinned model's distributions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<f64>,
    /// Tokens the adaptive attacker replaced, each followed by a new cheap
    /// draft (repaired pairs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_tokens: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub kind: String,
    pub tokens: usize,
    pub pairs: Vec<PairRecord>,
}

pub struct Engine {
    base: ChainSpec,
    /// Generated artifacts.
    cache: PathBuf,
    /// Check results (JSON lines), which a report needs and nothing else.
    records: PathBuf,
    /// False: report from the records alone, computing nothing missing.
    compute: bool,
    max_tokens: usize,
    miner: Keypair,
    /// By numerics profile id; every profile loads the same pinned file.
    runtimes: HashMap<String, Runtime>,
    progress: MultiProgress,
}

impl Engine {
    pub fn new(
        base: ChainSpec,
        cache: PathBuf,
        records: PathBuf,
        max_tokens: usize,
        runtimes: HashMap<String, Runtime>,
        compute: bool,
    ) -> Self {
        let miner = Keypair::from_secret(Sha256::digest(b"poi/experiment/miner").into());
        Self { base, cache, records, compute, max_tokens, miner, runtimes, progress: MultiProgress::new() }
    }

    /// Whether missing results are computed (or only the records reported).
    pub fn computes(&self) -> bool {
        self.compute
    }

    pub fn miner(&self) -> &Keypair {
        &self.miner
    }

    pub fn pinned(&self) -> anyhow::Result<&Runtime> {
        self.runtime(NATIVE)
    }

    pub fn records_dir(&self) -> &Path {
        &self.records
    }

    pub fn progress_bar(&self, len: usize, prefix: String) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(len as u64)).with_style(
            ProgressStyle::with_template("{prefix:>32} {bar:30} {pos}/{len} [{elapsed}<{eta}]")
                .expect("constant template"),
        );
        bar.set_prefix(prefix);
        bar
    }

    pub fn runtime(&self, profile: &str) -> anyhow::Result<&Runtime> {
        self.runtimes.get(profile).with_context(|| format!("profile {profile} was not loaded"))
    }

    /// Runs (or resumes) one run of the matrix over `prompts`, returning the
    /// records of exactly these prompts.
    pub fn run(&self, decoding: Decoding, run: &Run, prompts: &[Prompt]) -> anyhow::Result<Vec<RunRecord>> {
        let prompts = match run.per_kind() {
            Some(cap) => first_per_kind(prompts, cap),
            None => prompts.to_vec(),
        };
        let spec = decoding.spec(&self.base);
        let path = self.records.join(decoding.name()).join(format!("{}.jsonl", run.key()));
        let mut records: HashMap<String, RunRecord> =
            read_lines(&path)?.into_iter().map(|r: RunRecord| (r.id.clone(), r)).collect();
        let todo: Vec<&Prompt> = prompts.iter().filter(|p| !records.contains_key(&p.id)).collect();
        if !todo.is_empty() && self.compute {
            let mut out = append_to(&path)?;
            let bar = self.progress_bar(todo.len(), format!("{} {}", decoding.name(), run.key()));
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(run.validator_threads.unwrap_or(0))
                .build()
                .context("validator thread pool")?;
            let mut checker = ReplayChecker::new(spec.clone());
            for prompt in todo {
                let artifact = self.generation(&spec, decoding, run, prompt)?;
                let record = pool.install(|| self.check(&spec, &mut checker, run, prompt, &artifact))?;
                writeln!(out, "{}", serde_json::to_string(&record)?)?;
                out.flush()?;
                records.insert(record.id.clone(), record);
                bar.inc(1);
            }
            bar.finish();
        }
        Ok(prompts.iter().filter_map(|p| records.remove(&p.id)).collect())
    }

    /// The miner's artifact for `prompt`, from the cache or generated now.
    pub fn generation(
        &self,
        spec: &ChainSpec,
        decoding: Decoding,
        run: &Run,
        prompt: &Prompt,
    ) -> anyhow::Result<Artifact> {
        let seeding = if run.seeded { "seeded" } else { "unseeded" };
        let path = self
            .cache
            .join("gen")
            .join(decoding.name())
            .join(format!("{}-{seeding}", run.miner))
            .join(format!("{}.bin", prompt.id));
        if let Ok(bytes) = fs::read(&path) {
            return Artifact::decode(&bytes, usize::MAX).with_context(|| format!("cached {}", path.display()));
        }
        let pinned = self.runtime(NATIVE)?;
        let miner = self.runtime(run.miner)?;
        let prompt_tokens = pinned.chat_tokens(&[Message { role: "user".into(), content: prompt.prompt.clone() }])?;
        // Deterministic per prompt, so that reruns and other machines make
        // the same requests.
        let digest: [u8; 32] = Sha256::digest(format!("poi/experiment/request/{}", prompt.id)).into();
        let user_seed = run.seeded.then(|| u64::from_le_bytes(digest[16..24].try_into().expect("8 bytes")));
        let uuid = digest[..16].try_into().expect("16 bytes");
        let request = Request::new(uuid, user_seed, prompt_tokens, self.max_tokens as u32);
        let mut rng = rand::rngs::StdRng::from_seed(digest);
        let mut external = || rng.next_u64();
        let draws = match request.run_seed() {
            Some(seed) => Draws::Seeded(seed),
            None => Draws::External(&mut external),
        };
        let stop = StopRules::of(&request);
        let generated =
            generate(&miner.model, &request.prompt_tokens, &spec.sampling, spec.logged_k, &stop, draws, |_| {})?;
        let artifact = generated.body(spec, self.miner.public(), request, 0)?.sign(&self.miner);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        let partial = path.with_extension("partial");
        fs::write(&partial, artifact.encode())?;
        fs::rename(&partial, &path)?;
        Ok(artifact)
    }

    /// One teacher-forced pass of the pinned model, compared with each pair's
    /// artifact.
    fn check(
        &self,
        spec: &ChainSpec,
        checker: &mut ReplayChecker,
        run: &Run,
        prompt: &Prompt,
        artifact: &Artifact,
    ) -> anyhow::Result<RunRecord> {
        let body = &artifact.body;
        let tokens = body.generation.chosen_tokens();
        let prompt_tokens = &body.request.prompt_tokens;
        let pinned = self.runtime(NATIVE)?;
        let tops = teacher_forced_top_k(&pinned.model, prompt_tokens, &tokens, &spec.sampling, spec.logged_k)?;
        let mut pairs = Vec::new();
        for pair in run.pairs {
            let sign = |proof: Generated| -> anyhow::Result<Artifact> {
                Ok(proof.body(spec, self.miner.public(), body.request.clone(), 0)?.sign(&self.miner))
            };
            let (made, validator_tops, replaced_tokens) = match pair.output {
                Output::Direct => (artifact.clone(), None, None),
                Output::Prefill => {
                    let proof = prefill_proof(&tops, prompt_tokens, &tokens, body.finish_reason, &spec.sampling);
                    (sign(proof)?, None, None)
                }
                Output::RepairedPrefill => {
                    let seed: [u8; 32] = Sha256::digest(format!("poi/experiment/repair/{}", prompt.id)).into();
                    let mut rng = rand::rngs::StdRng::from_seed(seed);
                    let cheap = &self.runtime(run.miner)?.model;
                    let draft = (&tokens[..], body.finish_reason);
                    let repair = Repair::IntoKeptSet(&mut rng);
                    let repaired =
                        repaired_prefill(&pinned.model, cheap, prompt_tokens, draft, self.max_tokens, spec, repair)?;
                    (sign(repaired.proof)?, Some(repaired.tops), Some(repaired.replaced))
                }
            };
            // A repaired proof is over other tokens: the validator's pass is
            // the attacker's last one.
            let validator_tops = validator_tops.as_ref().unwrap_or(&tops);
            let report = compare(&spec.numerics, &made, validator_tops, &spec.thresholds);
            let max_position_distance = report.positions.iter().map(|p| p.distance).fold(0.0, f64::max);
            // Replay and surprisal matter for artifacts that claim the
            // pinned model's distributions: honest ones (false positives)
            // and pre-fill proofs (detection).
            let claims_pinned = match pair.output {
                Output::Prefill | Output::RepairedPrefill => true,
                Output::Direct => run.miner == NATIVE && run.validator_threads.is_none(),
            };
            let (prefixes, evidence) = match claims_pinned {
                true => (self.prefixes(checker, &made)?, unseeded_evidence(spec, &made, &self.miner)),
                false => (Vec::new(), Vec::new()),
            };
            pairs.push(PairRecord {
                pair: pair.name.to_string(),
                distance2: report.distance2,
                match_ratio: report.match_ratio,
                max_position_distance,
                full_check_accepted: report.accepted,
                prefixes,
                evidence,
                replaced_tokens,
            });
        }
        Ok(RunRecord { id: prompt.id.clone(), kind: prompt.kind.clone(), tokens: tokens.len(), pairs })
    }

    fn prefixes(&self, checker: &mut ReplayChecker, artifact: &Artifact) -> anyhow::Result<Vec<PrefixRecord>> {
        let positions = artifact.body.generation.to_positions();
        let mut out = Vec::new();
        for n in PREFIX_LENGTHS.into_iter().filter(|&n| n <= positions.len()) {
            let mut body = artifact.body.clone();
            if n < positions.len() {
                body.generation = Generation::new(body.generation.k(), &positions[..n])?;
                body.finish_reason = FinishReason::MaxTokens;
                // The same request with a smaller budget: a prefix is what
                // a requester asking for `n` tokens would have got.
                body.request.max_tokens = n as u32;
            }
            // The surprisal test runs after replay; its failure still means
            // that replay passed.
            let replay_ok = body.request.user_seed.is_some().then(|| {
                matches!(checker.check(&body.clone().sign(&self.miner)), Ok(_) | Err(ReplayError::Surprisal { .. }))
            });
            body.request.user_seed = None;
            let z = match checker.check(&body.sign(&self.miner)) {
                Ok(report) => Some(report.z()),
                Err(ReplayError::Surprisal { z, .. }) => Some(z),
                Err(_) => None,
            };
            out.push(PrefixRecord { n, replay_ok, z });
        }
        Ok(out)
    }
}

/// The artifact's per-miner evidence at each of `TILTS`, checked as the
/// unseeded artifact it would be without its seed; empty if the replay
/// check rejects that (a node would not store it).
pub fn unseeded_evidence(spec: &ChainSpec, artifact: &Artifact, miner: &Keypair) -> Vec<f64> {
    let mut body = artifact.body.clone();
    body.request.user_seed = None;
    body.request.binding = None;
    let unseeded = body.sign(miner);
    let mut out = Vec::with_capacity(TILTS.len());
    for tilt in TILTS {
        match ReplayChecker::new(spec.clone()).with_evidence_tilt(tilt).check(&unseeded) {
            Ok(report) => out.push(report.evidence.expect("unseeded artifacts carry evidence")),
            Err(_) => return Vec::new(),
        }
    }
    out
}

/// The records of a JSON-lines file (none if it does not exist yet).
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A line cut short by a crash is redone.
        if let Ok(record) = serde_json::from_str(&line) {
            records.push(record);
        }
    }
    Ok(records)
}

/// Opens a JSON-lines file for appending records to.
pub fn append_to(path: &Path) -> anyhow::Result<File> {
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))
}

/// The first `cap` prompts of each kind, in order.
fn first_per_kind(prompts: &[Prompt], cap: usize) -> Vec<Prompt> {
    let mut taken: HashMap<&str, usize> = HashMap::new();
    prompts
        .iter()
        .filter(|p| {
            let count = taken.entry(&p.kind).or_default();
            *count += 1;
            *count <= cap
        })
        .cloned()
        .collect()
}

/// Prompts from a JSON-lines file, at most `per_kind` of each kind (in file
/// order), ids unique.
pub fn load_prompts(path: Option<&Path>, per_kind: usize) -> anyhow::Result<Vec<Prompt>> {
    let text = match path {
        Some(path) => fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => include_str!("prompts.jsonl").to_string(),
    };
    let mut seen = HashSet::new();
    let mut prompts = Vec::new();
    for (line_number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let prompt: Prompt = serde_json::from_str(line)
            .with_context(|| format!("prompts line {}: expected {{id, kind, prompt}}", line_number + 1))?;
        anyhow::ensure!(seen.insert(prompt.id.clone()), "prompts line {}: duplicate id {}", line_number + 1, prompt.id);
        prompts.push(prompt);
    }
    let prompts = first_per_kind(&prompts, per_kind);
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    Ok(prompts)
}

/// The cache directory for one configuration: anything that changes the
/// artifacts (the chain they are made for, bar thresholds; the length)
/// changes the key, so stale results are never mixed in.
pub fn cache_key(spec: &ChainSpec, max_tokens: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(Decoding::Sampled.spec(spec).chain_id().0);
    hasher.update((max_tokens as u64).to_le_bytes());
    hex::encode(&hasher.finalize()[..8])
}
