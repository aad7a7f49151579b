//! The full check (DESIGN §5): re-run the pinned model over the artifact's
//! tokens and compare its lists with what the miner logged.

use poi_artifact::Artifact;
use poi_chain_spec::Thresholds;
use poi_verifier::full_check::{compare, FullCheckReport};

use crate::generate::teacher_forced_top_k;
use crate::{Llama, ModelError};

/// Runs the check with `model` (whose profile decides exact or tolerant
/// comparison, and which the report names) against the chain's thresholds.
/// The artifact should have passed the replay check, which refuses what the
/// model cannot run; an error here is a check that could not be made.
pub fn full_check(model: &Llama, artifact: &Artifact, thresholds: &Thresholds) -> Result<FullCheckReport, ModelError> {
    let body = &artifact.body;
    let prompt = &body.request.prompt_tokens;
    let generated = body.generation.chosen_tokens();
    let validator = teacher_forced_top_k(model, prompt, &generated, &body.sampling, body.generation.k())?;
    Ok(compare(model.profile(), artifact, &validator, thresholds))
}
