//! The mutator: a seeded xorshift generator and byte-level mutations
//! (flips, interesting values, dictionary tokens, splices, truncation),
//! deterministic for a given seed.

/// xorshift64* generator.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (never stuck at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// FNV-1a, to derive per-target seeds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Values that tend to sit on boundaries.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x1000,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x0000_8000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// A mutated copy of `input`: one to four mutations.
pub fn mutate(rng: &mut Rng, input: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len() as u64;
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                out[i] = rng.next() as u8;
            }
            2 if len >= 8 => {
                let width = [1usize, 2, 4, 8][rng.below(4) as usize];
                let i = rng.below(len - width as u64 + 1) as usize;
                let value = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                out[i..i + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            3 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len() as u64) as usize];
                let at = rng.below(len + 1) as usize;
                out.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let at = rng.below(len) as usize;
                let n = (rng.below(16) as usize + 1).min(out.len() - at);
                out.drain(at..at + n);
            }
            5 if len > 0 => {
                out.truncate(rng.below(len) as usize);
            }
            6 if len > 1 => {
                // Copy a chunk of the input over another place.
                let from = rng.below(len) as usize;
                let n = (rng.below(64) as usize + 1).min(out.len() - from);
                let chunk: Vec<u8> = out[from..from + n].to_vec();
                let to = rng.below(len) as usize;
                let end = (to + n).min(out.len());
                out[to..end].copy_from_slice(&chunk[..end - to]);
            }
            _ => {
                let at = rng.below(len + 1) as usize;
                out.insert(at, rng.next() as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let input = b"hello.elf name=x mem=8M";
        for _ in 0..100 {
            assert_eq!(
                mutate(&mut a, input, &[b"--"]),
                mutate(&mut b, input, &[b"--"])
            );
        }
    }

    #[test]
    fn below_stays_below() {
        let mut rng = Rng::new(1);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
    }
}
