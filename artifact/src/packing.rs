//! Token ids packed at the minimal bit width. A 49,152-token vocabulary needs 16
//! bits, so k = 20 candidates cost 40 bytes per position instead of 80 (u32) or
//! ~60 (varint); a 151k vocabulary costs 18 bits.

use bincode::{Decode, Encode};

use crate::error::DecodeError;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct PackedTokens {
    count: u32,
    bits: u8,
    data: Vec<u8>,
}

fn width_for(max: u32) -> u8 {
    (32 - max.leading_zeros()).max(1) as u8
}

fn packed_len(count: usize, bits: u8) -> usize {
    (count * usize::from(bits)).div_ceil(8)
}

impl PackedTokens {
    pub(crate) fn pack(tokens: &[u32]) -> Self {
        let Some(&max) = tokens.iter().max() else {
            return Self { count: 0, bits: 0, data: Vec::new() };
        };
        let bits = width_for(max);
        let mut data = Vec::with_capacity(packed_len(tokens.len(), bits));
        let (mut acc, mut filled) = (0u64, 0u32);
        for &token in tokens {
            acc |= u64::from(token) << filled;
            filled += u32::from(bits);
            while filled >= 8 {
                data.push(acc as u8);
                acc >>= 8;
                filled -= 8;
            }
        }
        if filled > 0 {
            data.push(acc as u8);
        }
        let count = u32::try_from(tokens.len()).expect("token count fits u32");
        Self { count, bits, data }
    }

    pub(crate) fn count(&self) -> usize {
        self.count as usize
    }

    /// Unpacks, refusing every non-canonical form: a width wider than needed,
    /// a data length that does not match, non-zero padding.
    pub(crate) fn unpack(&self, what: &'static str) -> Result<Vec<u32>, DecodeError> {
        let count = self.count as usize;
        if count == 0 {
            return if self.bits == 0 && self.data.is_empty() {
                Ok(Vec::new())
            } else {
                Err(DecodeError::NonCanonical("empty token list with width or data"))
            };
        }
        if !(1..=32).contains(&self.bits) {
            return Err(DecodeError::Structure(format!("{what}: token width {} bits", self.bits)));
        }
        // Checked before allocating: the data bounds count, so a huge claimed
        // count with little data never allocates.
        if self.data.len() != packed_len(count, self.bits) {
            return Err(DecodeError::Structure(format!(
                "{what}: {} bytes of packed data for {count} tokens of {} bits",
                self.data.len(),
                self.bits
            )));
        }
        let mask = (1u64 << self.bits) - 1;
        let mut tokens = Vec::with_capacity(count);
        let (mut acc, mut filled) = (0u64, 0u32);
        let mut bytes = self.data.iter();
        for _ in 0..count {
            while filled < u32::from(self.bits) {
                let byte = *bytes.next().expect("length checked above");
                acc |= u64::from(byte) << filled;
                filled += 8;
            }
            tokens.push((acc & mask) as u32);
            acc >>= self.bits;
            filled -= u32::from(self.bits);
        }
        if acc != 0 {
            return Err(DecodeError::NonCanonical("non-zero padding bits after packed tokens"));
        }
        let max = tokens.iter().copied().max().unwrap_or(0);
        if width_for(max) != self.bits {
            return Err(DecodeError::NonCanonical("token width is not the minimal one"));
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_minimal() {
        for tokens in [vec![0u32], vec![1, 2, 3], vec![49151, 0, 17], vec![u32::MAX, 5], vec![]] {
            let packed = PackedTokens::pack(&tokens);
            assert_eq!(packed.unpack("t").unwrap(), tokens);
        }
        assert_eq!(PackedTokens::pack(&[49151; 20]).data.len(), 40);
    }

    #[test]
    fn refuses_wider_than_needed() {
        let mut packed = PackedTokens::pack(&[1, 2, 3]);
        packed.bits = 8;
        packed.data = vec![1, 2, 3];
        assert_eq!(packed.unpack("t"), Err(DecodeError::NonCanonical("token width is not the minimal one")));
    }

    #[test]
    fn refuses_dirty_padding_and_wrong_length() {
        let mut packed = PackedTokens::pack(&[3]);
        packed.data[0] |= 0x80;
        assert!(matches!(packed.unpack("t"), Err(DecodeError::NonCanonical(_))));
        let mut packed = PackedTokens::pack(&[3, 3]);
        packed.count = 1_000_000;
        assert!(matches!(packed.unpack("t"), Err(DecodeError::Structure(_))));
    }
}
