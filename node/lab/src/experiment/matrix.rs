//! The detection matrix of DESIGN §9: which miner profile generates, whether
//! the pinned model then "proves" its tokens (pre-fill), and how the
//! validator runs. The validator is always the chain's pinned profile.

use poi_chain_spec::{ChainSpec, MinerTestParams, Thresholds};

pub const NATIVE: &str = "gguf-native-cpu";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decoding {
    /// The chain's sampling parameters.
    Sampled,
    /// Temperature 0: the chosen token is the top candidate.
    Greedy,
}

impl Decoding {
    pub const ALL: [Decoding; 2] = [Decoding::Sampled, Decoding::Greedy];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sampled => "sampled",
            Self::Greedy => "greedy",
        }
    }

    /// The chain the artifacts are made for: greedy runs live on a copy of
    /// the chain with temperature 0 (its own chain id). Thresholds are set to
    /// fixed values, so that recalibrating them (which changes the real
    /// chain id) keeps the cached artifacts valid: the experiment judges
    /// stored scores against thresholds itself. The per-miner test's
    /// parameters are fixed for the same reason; the experiment computes its
    /// evidence at several tilts.
    pub fn spec(self, base: &ChainSpec) -> ChainSpec {
        let mut spec = base.clone();
        spec.thresholds = Thresholds { max_distance2: 1.0, min_match_ratio: 0.0, max_surprisal_z: 4.0 };
        spec.miner_test = MinerTestParams { tilt: TILTS[0], false_alarm_rate: 0.001, window: 10_000 };
        if self == Self::Greedy {
            spec.sampling.temperature = 0.0;
        }
        spec
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Should be accepted: its rejections are false positives.
    Honest,
    NumericsSwap,
    CheaperModel,
    Prefill,
    /// Pre-fill with every token repaired into the pinned kept set.
    AdaptivePrefill,
}

/// How one pair's artifact is made from a run's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The miner's own artifact.
    Direct,
    /// Its tokens, with the pinned model's top-k logged as the proof.
    Prefill,
    /// The same after repairing every token the pinned sampler could not
    /// pick (`attack::repaired_prefill`): only the surprisal test is left.
    RepairedPrefill,
}

#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub name: &'static str,
    pub class: Class,
    pub output: Output,
}

/// One generation source, validated once (one teacher-forced pass of the
/// pinned model), yielding one or more pairs: a cheap model's direct artifact
/// and its pre-fill proof share the same pass, since the proof is exactly the
/// pinned model's top-k over the cheap tokens.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub miner: &'static str,
    /// Draws from the run seed (replayable); false: from other randomness.
    pub seeded: bool,
    /// Validator threads; `None`: the default pool (all cores).
    pub validator_threads: Option<usize>,
    pub pairs: &'static [Pair],
}

impl Run {
    pub fn key(&self) -> &'static str {
        self.pairs[0].name
    }

    /// Greedy decoding has no randomness, so seeding changes nothing there.
    pub fn applies_to(&self, decoding: Decoding) -> bool {
        self.seeded || decoding == Decoding::Sampled
    }

    /// The adaptive attacker drafts and proves again after every repair:
    /// tens of seconds per artifact on two cores, so it runs on the first
    /// prompts of each kind only.
    pub fn per_kind(&self) -> Option<usize> {
        self.pairs.iter().any(|p| p.output == Output::RepairedPrefill).then_some(ADAPTIVE_PER_KIND)
    }
}

const fn pair(name: &'static str, class: Class, output: Output) -> Pair {
    Pair { name, class, output }
}

pub const RUNS: &[Run] = &[
    Run {
        miner: NATIVE,
        seeded: true,
        validator_threads: None,
        pairs: &[pair("honest", Class::Honest, Output::Direct)],
    },
    Run {
        miner: NATIVE,
        seeded: true,
        validator_threads: Some(1),
        pairs: &[pair("honest-1-thread", Class::Honest, Output::Direct)],
    },
    Run {
        miner: "dequant-f32-cpu",
        seeded: true,
        validator_threads: None,
        pairs: &[pair("swap-f32", Class::NumericsSwap, Output::Direct)],
    },
    Run {
        miner: "dequant-f16-cpu",
        seeded: true,
        validator_threads: None,
        pairs: &[pair("swap-f16", Class::NumericsSwap, Output::Direct)],
    },
    Run {
        miner: "requant-q4_0-cpu",
        seeded: true,
        validator_threads: None,
        pairs: &[
            pair("cheap-q4_0", Class::CheaperModel, Output::Direct),
            pair("prefill-q4_0", Class::Prefill, Output::Prefill),
        ],
    },
    Run {
        miner: "requant-q2k-cpu",
        seeded: true,
        validator_threads: None,
        pairs: &[
            pair("cheap-q2k", Class::CheaperModel, Output::Direct),
            pair("prefill-q2k", Class::Prefill, Output::Prefill),
        ],
    },
    Run {
        miner: "requant-q4_0-cpu",
        seeded: false,
        validator_threads: None,
        pairs: &[pair("prefill-q4_0-unseeded", Class::Prefill, Output::Prefill)],
    },
    Run {
        miner: "requant-q2k-cpu",
        seeded: false,
        validator_threads: None,
        pairs: &[pair("prefill-q2k-unseeded", Class::Prefill, Output::Prefill)],
    },
    // Separate runs (their own cache files) over the same cached generations.
    Run {
        miner: "requant-q4_0-cpu",
        seeded: false,
        validator_threads: None,
        pairs: &[pair("repaired-q4_0-unseeded", Class::AdaptivePrefill, Output::RepairedPrefill)],
    },
    Run {
        miner: "requant-q2k-cpu",
        seeded: false,
        validator_threads: None,
        pairs: &[pair("repaired-q2k-unseeded", Class::AdaptivePrefill, Output::RepairedPrefill)],
    },
];

/// `requant-q4_0-cpu` → `q4_0`, for labels.
pub fn short_name(profile: &str) -> &str {
    profile.trim_start_matches("requant-").trim_end_matches("-cpu")
}

pub const ADAPTIVE_PER_KIND: usize = 5;

/// The per-miner test's tilts the experiment computes evidence at, so that
/// the report can compare them and recommend one.
pub const TILTS: [f64; 6] = [1.0 / 64.0, 1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0, 1.0 / 2.0];

/// Prefix lengths at which the replay and surprisal tests are evaluated.
pub const PREFIX_LENGTHS: [usize; 3] = [32, 64, 128];
