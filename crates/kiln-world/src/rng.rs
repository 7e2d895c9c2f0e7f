//! SplitMix64: a tiny PRNG with a fixed algorithm, so a seed gives the same scenes on every
//! platform and with every dependency version.

#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (0 when `n` is 0), by multiply-shift: no modulo bias worth
    /// speaking of and no platform-dependent arithmetic.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1) with 24 bits, exactly representable in f32.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// Picks one item; `items` must not be empty (all callers pass constant tables).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Approximately standard normal (sum of four 16-bit uniforms, rescaled): cheap,
    /// bounded at +-3.5 and made of integer arithmetic only; it only feeds image noise.
    pub fn gaussian(&mut self) -> f32 {
        let r = self.next_u64();
        let sum: u64 = (0..4).map(|k| (r >> (16 * k)) & 0xFFFF).sum();
        (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
    }
}
