//! Replay-check throughput on 256-token, k = 20 artifacts, signature and decode
//! included (DESIGN §10 goal: ≥ 1,000,000 positions/s/core), with the parts
//! benchmarked alone to show what bounds it. A requester-bound artifact
//! carries two signatures (miner and requester), a miner-seeded or unseeded
//! one only the miner's.
//!
//! cargo bench -p poi-verifier --bench replay

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use poi_artifact::Artifact;
use poi_chain_spec::ChainSpec;
use poi_verifier::simulate as common;
use poi_verifier::ReplayChecker;

const POSITIONS: usize = 256;

fn replay(c: &mut Criterion) {
    let spec = ChainSpec::devnet();
    let seeded = common::build(&spec, POSITIONS, 1, common::Chooser::Seeded);
    // The same artifact without the requester's binding: one signature to
    // verify instead of two.
    let mut unbound = seeded.artifact.body.clone();
    unbound.request.binding = None;
    let miner_seeded = unbound.sign(&common::miner()).encode();
    let unseeded = common::build(&spec, POSITIONS, 2, common::Chooser::HonestUnseeded);
    let limit = spec.limits.max_artifact_bytes as usize;
    let mut checker = ReplayChecker::new(spec);

    let mut group = c.benchmark_group("replay-256x20");
    group.throughput(Throughput::Elements(POSITIONS as u64));
    group.bench_function("full check_bytes (seeded, requester-bound)", |b| {
        b.iter(|| checker.check_bytes(black_box(&seeded.bytes)).unwrap())
    });
    group.bench_function("full check_bytes (seeded, miner-seeded)", |b| {
        b.iter(|| checker.check_bytes(black_box(&miner_seeded)).unwrap())
    });
    group.bench_function("full check_bytes (unseeded)", |b| {
        b.iter(|| checker.check_bytes(black_box(&unseeded.bytes)).unwrap())
    });
    group.bench_function("decode only", |b| b.iter(|| Artifact::decode(black_box(&seeded.bytes), limit).unwrap()));
    group.bench_function("signature only", |b| b.iter(|| seeded.artifact.verify_signature().unwrap()));
    group.bench_function("rules without decode", |b| b.iter(|| checker.check(black_box(&seeded.artifact)).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = replay
}
criterion_main!(benches);
