//! A catch-up sync page from a peer (CBOR, as the request-response codec
//! reads it): decoding never panics, nor does decoding its entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poi_artifact::{Artifact, Vote, MAX_WIRE_BYTES};
use poi_artifact::sync::{SyncEntry, SyncResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = cbor4ii::serde::from_slice::<SyncResponse>(data) {
        for entry in &page.entries {
            match entry {
                SyncEntry::Artifact(bytes) => drop(Artifact::decode(bytes, MAX_WIRE_BYTES)),
                SyncEntry::Vote(bytes) => drop(Vote::decode(bytes)),
            }
        }
    }
});
