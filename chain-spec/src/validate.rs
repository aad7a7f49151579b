//! Range checks for every value of a chain spec, each error naming its field.

use std::collections::HashSet;
use std::fmt::Display;

use poi_artifact::{MAX_K, MAX_WIRE_BYTES};
use thiserror::Error;

use crate::{ChainSpec, SeedingPolicy};

/// The largest `miner_test.window`: one test query reads at most this many
/// index entries.
pub const MAX_MINER_TEST_WINDOW: u32 = 100_000;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("field `{field}`: {problem}")]
pub struct SpecError {
    pub field: String,
    pub problem: String,
}

fn fail(field: &str, problem: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError { field: field.to_string(), problem: problem.into() })
}

fn in_range<T: PartialOrd + Display>(field: &str, value: T, min: T, max: T) -> Result<(), SpecError> {
    // Written so that NaN fails too.
    if value >= min && value <= max {
        Ok(())
    } else {
        fail(field, format!("{value} is outside {min}..={max}"))
    }
}

fn non_empty(field: &str, value: &str, max_len: usize) -> Result<(), SpecError> {
    if value.is_empty() || value.len() > max_len {
        return fail(field, format!("must be 1 to {max_len} bytes long"));
    }
    Ok(())
}

impl ChainSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        non_empty("name", &self.name, 64)?;

        let m = &self.model;
        non_empty("model.name", &m.name, 128)?;
        non_empty("model.source", &m.source, 256)?;
        non_empty("model.file_name", &m.file_name, 256)?;
        if m.architecture != "llama" {
            fail("model.architecture", format!("{:?} is not supported (only \"llama\")", m.architecture))?;
        }
        in_range("model.n_layers", m.n_layers, 1, 1024)?;
        in_range("model.hidden_size", m.hidden_size, 1, 65536)?;
        in_range("model.n_heads", m.n_heads, 1, 1024)?;
        in_range("model.n_kv_heads", m.n_kv_heads, 1, m.n_heads)?;
        if !m.hidden_size.is_multiple_of(m.n_heads) {
            fail("model.hidden_size", "must be a multiple of model.n_heads")?;
        }
        if !m.n_heads.is_multiple_of(m.n_kv_heads) {
            fail("model.n_kv_heads", "must divide model.n_heads")?;
        }
        in_range("model.vocab_size", m.vocab_size, 2, 1 << 24)?;
        in_range("model.context_length", m.context_length, 1, 1 << 24)?;
        in_range("model.eos_token_id", m.eos_token_id, 0, m.vocab_size - 1)?;

        // The vote carries `label()`, which must fit the vote's limit.
        non_empty("numerics.id", &self.numerics.id, poi_artifact::MAX_PROFILE_ID_LEN - 12)?;
        in_range("numerics.version", self.numerics.version, 1, u32::MAX)?;

        in_range("logged_k", self.logged_k, 1, MAX_K)?;
        if u32::from(self.logged_k) > m.vocab_size {
            fail("logged_k", "exceeds model.vocab_size")?;
        }

        let s = &self.sampling;
        in_range("sampling.temperature", s.temperature, 0.0, 100.0)?;
        in_range("sampling.top_k", s.top_k, 1, u32::from(self.logged_k))?;
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            fail("sampling.top_p", format!("{} is outside (0, 1]", s.top_p))?;
        }
        if !(s.min_p >= 0.0 && s.min_p < 1.0) {
            fail("sampling.min_p", format!("{} is outside [0, 1)", s.min_p))?;
        }
        if !(s.repetition_penalty > 0.0 && s.repetition_penalty <= 10.0) {
            fail("sampling.repetition_penalty", format!("{} is outside (0, 10]", s.repetition_penalty))?;
        }
        in_range("sampling.presence_penalty", s.presence_penalty, -2.0, 2.0)?;
        in_range("sampling.frequency_penalty", s.frequency_penalty, -2.0, 2.0)?;

        let t = &self.thresholds;
        if !(t.max_distance2 > 0.0 && t.max_distance2 <= 1.0) {
            fail("thresholds.max_distance2", format!("{} is outside (0, 1]", t.max_distance2))?;
        }
        in_range("thresholds.min_match_ratio", t.min_match_ratio, 0.0, 1.0)?;
        if !(t.max_surprisal_z.is_finite() && t.max_surprisal_z > 0.0) {
            fail("thresholds.max_surprisal_z", "must be finite and positive")?;
        }

        let mt = &self.miner_test;
        if !(mt.tilt > 0.0 && mt.tilt < 1.0) {
            fail("miner_test.tilt", format!("{} is outside (0, 1)", mt.tilt))?;
        }
        if !(mt.false_alarm_rate > 0.0 && mt.false_alarm_rate < 1.0) {
            fail("miner_test.false_alarm_rate", format!("{} is outside (0, 1)", mt.false_alarm_rate))?;
        }
        in_range("miner_test.window", mt.window, 1, MAX_MINER_TEST_WINDOW)?;

        in_range("full_check_rate", self.full_check_rate, 0.0, 1.0)?;

        let l = &self.limits;
        in_range("limits.max_artifact_bytes", l.max_artifact_bytes, 1024, MAX_WIRE_BYTES as u32)?;
        in_range("limits.max_prompt_tokens", l.max_prompt_tokens, 1, m.context_length)?;
        in_range("limits.max_generated_tokens", l.max_generated_tokens, 1, m.context_length)?;

        if self.validators.is_empty() {
            fail("validators", "the validator set is empty")?;
        }
        let mut seen = HashSet::new();
        let mut seen_vrf = HashSet::new();
        let mut total: u64 = 0;
        for (index, validator) in self.validators.iter().enumerate() {
            let field = format!("validators[{index}]");
            if !seen.insert(validator.public_key) {
                fail(&format!("{field}.public_key"), "listed twice")?;
            }
            if validator.public_key.verify_point().is_err() {
                fail(&format!("{field}.public_key"), "not a valid ed25519 public key")?;
            }
            if !seen_vrf.insert(validator.vrf_key) {
                fail(&format!("{field}.vrf_key"), "listed twice")?;
            }
            if validator.vrf_key.verify_point().is_err() {
                fail(&format!("{field}.vrf_key"), "not a valid sr25519 (ristretto255) public key")?;
            }
            if validator.weight == 0 {
                fail(&format!("{field}.weight"), "must be positive")?;
            }
            total = total.checked_add(validator.weight).ok_or_else(|| SpecError {
                field: format!("{field}.weight"),
                problem: "total weight overflows".into(),
            })?;
        }
        let mut requesters = HashSet::new();
        for (index, key) in self.seeding.requesters.iter().enumerate() {
            let field = format!("seeding.requesters[{index}]");
            if !requesters.insert(*key) {
                fail(&field, "listed twice")?;
            }
            if key.verify_point().is_err() {
                fail(&field, "not a valid ed25519 public key")?;
            }
        }
        if self.seeding.policy == SeedingPolicy::Required && self.seeding.requesters.is_empty() {
            fail("seeding.requesters", "policy \"required\" with no requester admits no artifact")?;
        }
        Ok(())
    }
}
