//! The per-miner sequential test over stored evidence (DESIGN §9): a bounded
//! backwards scan of the miner's newest artifacts, then the CUSUM forwards.

use poi_artifact::PublicKey;
use poi_chain_spec::MinerTestParams;
use poi_verifier::miner_test::MinerTest;
use rocksdb::{Direction, IteratorMode};

use super::keys::CF_MINER_EVIDENCE;
use super::{Store, StoreError};

impl Store {
    /// The test over the miner's newest `params.window` unseeded and
    /// miner-seeded artifacts, in the order of their creation times (then
    /// ids), which every node that stored them agrees on. Reads at most
    /// `window` index entries.
    pub fn miner_test(&self, miner: &PublicKey, params: &MinerTestParams) -> Result<MinerTest, StoreError> {
        let upper = [&miner.0[..], &[0xff; 40]].concat();
        let mut newest_first = Vec::new();
        let cf = self.cf(CF_MINER_EVIDENCE);
        for item in self.db.iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse)) {
            if newest_first.len() == params.window as usize {
                break;
            }
            let (key, value) = item?;
            if !key.starts_with(&miner.0) {
                break;
            }
            let bytes: [u8; 8] = value[..].try_into().map_err(|_| StoreError::Corrupt {
                what: "miner evidence",
                detail: format!("{} bytes, expected 8", value.len()),
            })?;
            newest_first.push(f64::from_le_bytes(bytes));
        }
        Ok(MinerTest::over(newest_first.into_iter().rev(), params))
    }
}
