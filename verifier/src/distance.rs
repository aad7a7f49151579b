//! `distance2` and the match ratio, exactly as the seed document defines them.
//!
//! Per position, for every token the prover logged: if the validator also has
//! it, compare the two log-probs; otherwise stand in a value one step below the
//! validator's lowest (the gap between its two lowest entries, or 1 nat when it
//! has fewer than two). Each token adds `|a - b| / (1e-10 + |a| + |b|) / 2`. A
//! validator position with no entries adds the prover's list length and no
//! matches. The sum is smoothed as `(Σ + 1) / (max(100, n) * k + 1)`, with `k`
//! the prover's list length at the first position; sequences whose chosen
//! tokens differ give `(-1, -1)`.

/// One position of one side: the chosen token and the top-k list, highest
/// first. Keys are token ids, or token strings when comparing two servers.
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprobs<K> {
    pub chosen: K,
    pub entries: Vec<(K, f64)>,
}

/// `(average distance, match ratio)`, or `(-1, -1)` when the two sides did not
/// produce the same token sequence (or there is nothing to compare).
pub fn distance2<K: PartialEq>(inference: &[TopLogprobs<K>], validation: &[TopLogprobs<K>]) -> (f64, f64) {
    let same_sequence =
        inference.len() == validation.len() && inference.iter().zip(validation).all(|(i, v)| i.chosen == v.chosen);
    let k = inference.first().map_or(0, |p| p.entries.len());
    if !same_sequence || k == 0 {
        return (-1.0, -1.0);
    }
    let (mut total, mut matches) = (0.0, 0usize);
    for (inf, val) in inference.iter().zip(validation) {
        let (distance, matched) = position_distance(&inf.entries, &val.entries);
        total += distance;
        matches += matched;
    }
    let n = inference.len();
    let match_ratio = matches as f64 / (n * k) as f64;
    let distance = (total + 1.0) / ((n.max(100) * k) as f64 + 1.0);
    (distance, match_ratio)
}

/// One position's summand of `distance2` and how many of the prover's tokens
/// the validator also listed.
pub fn position_distance<K: PartialEq>(inference: &[(K, f64)], validation: &[(K, f64)]) -> (f64, usize) {
    if validation.is_empty() {
        return (inference.len() as f64, 0);
    }
    let (lowest, second) = two_lowest(validation);
    let stand_in = lowest - (second.unwrap_or(lowest - 1.0) - lowest);
    let mut distance = 0.0;
    let mut matches = 0;
    for (token, inf_logprob) in inference {
        let val_logprob = match validation.iter().find(|(t, _)| t == token) {
            Some(&(_, logprob)) => {
                matches += 1;
                logprob
            }
            None => stand_in,
        };
        let denominator = 1e-10 + inf_logprob.abs() + val_logprob.abs();
        distance += (inf_logprob - val_logprob).abs() / denominator / 2.0;
    }
    (distance, matches)
}

fn two_lowest<K>(entries: &[(K, f64)]) -> (f64, Option<f64>) {
    let mut values: Vec<f64> = entries.iter().map(|&(_, v)| v).collect();
    values.sort_by(f64::total_cmp);
    (values[0], values.get(1).copied())
}
