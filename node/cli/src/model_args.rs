//! Model options shared by the commands that run the model (in poi and poi-lab).

use std::path::PathBuf;

use anyhow::{bail, Context};
use poi_chain_spec::{ChainSpec, NumericsProfile};
use poi_model::runtime::{default_model_path, Runtime};
use poi_model::{builtin_profile, builtin_profiles};

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// The chain's GGUF file; default: where scripts/fetch-model.sh puts it
    /// ($POI_MODEL_DIR or ~/.cache/poi/models).
    #[arg(long, value_name = "GGUF")]
    pub model: Option<PathBuf>,
    /// Run under another numerics profile than the chain's (experiments: a
    /// cheaper miner, a different validator). One of the built-in ids.
    #[arg(long, value_name = "ID")]
    pub profile: Option<String>,
}

impl ModelArgs {
    pub fn profile(&self, spec: &ChainSpec) -> anyhow::Result<NumericsProfile> {
        match &self.profile {
            None => Ok(spec.numerics.clone()),
            Some(id) if *id == spec.numerics.id => Ok(spec.numerics.clone()),
            Some(id) => match builtin_profile(id) {
                Some(profile) => Ok(profile),
                None => {
                    let known: Vec<String> = builtin_profiles().into_iter().map(|p| p.id).collect();
                    bail!("unknown numerics profile {id:?}; built-in profiles: {}", known.join(", "))
                }
            },
        }
    }

    /// Loads the pinned file (hash and shape checked) under the chosen profile.
    pub fn load(&self, spec: &ChainSpec) -> anyhow::Result<Runtime> {
        let path = self.model.clone().unwrap_or_else(|| default_model_path(spec));
        if !path.exists() {
            bail!("model file {} not found: run scripts/fetch-model.sh (or pass --model)", path.display());
        }
        let profile = self.profile(spec)?;
        let started = std::time::Instant::now();
        let runtime = Runtime::load_pinned(spec, &path, Some(&profile))
            .with_context(|| format!("loading {} under profile {}", path.display(), profile.id))?;
        tracing::info!(profile = %profile.id, seconds = started.elapsed().as_secs_f32(), "model loaded");
        Ok(runtime)
    }
}
