//! The seeded, portable random source: ChaCha8, one independent stream per purpose.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random draw is for; each purpose has its own ChaCha stream, so adding draws for one
/// purpose does not shift the others (a scenario's scheduling stays put when faults change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    // Stream 1 was the scheduler's tie-breaks; ties now follow a seeded order in its cache. The
    // ids of the others stay, so a seed still draws the same names, faults and jitter.
    /// Generated names (DaemonSet pod suffixes).
    Names = 2,
    /// Fault draws (conflicts, latencies).
    Faults = 3,
    /// Timing jitter of kubelets and watches.
    Jitter = 4,
}

/// One seeded generator per [`Stream`].
#[derive(Debug, Clone)]
pub struct SimRng {
    streams: [ChaCha8Rng; 3],
}

impl SimRng {
    /// Generators for `seed`.
    pub fn new(seed: u64) -> Self {
        let make = |stream: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(stream);
            rng
        };
        Self { streams: [make(2), make(3), make(4)] }
    }

    fn stream(&mut self, stream: Stream) -> &mut ChaCha8Rng {
        &mut self.streams[stream as usize - 2]
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, stream: Stream, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.stream(stream).random_range(0..bound) }
    }

    /// True with probability `p` (never draws when `p` is 0, so fault-free runs use no faults stream).
    pub fn chance(&mut self, stream: Stream, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.stream(stream).random_bool(p)
    }

    /// A lowercase alphanumeric suffix of `len` characters, as Kubernetes' generateName makes.
    pub fn suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len).map(|_| ALPHABET[self.below(Stream::Names, ALPHABET.len() as u64) as usize] as char).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_streams_are_independent() {
        let (mut a, mut b) = (SimRng::new(7), SimRng::new(7));
        let _ = a.below(Stream::Faults, 100);
        assert_eq!(a.below(Stream::Jitter, 1000), b.below(Stream::Jitter, 1000));
        assert_eq!(a.suffix(5), b.suffix(5));
    }
}
