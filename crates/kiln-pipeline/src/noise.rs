//! Seeded Gaussian noise that follows PyTorch's CPU generator, so that `--seed N` here and
//! `torch.Generator().manual_seed(N)` in diffusers start from the same latents (to float
//! rounding: torch may use vectorised log/sin/cos).

use candle_core::{Device, Result, Shape, Tensor};

/// The 32-bit Mersenne Twister (MT19937), as torch's CPU generator uses it.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        // torch keeps the low 32 bits of the seed for the engine's state.
        state[0] = seed as u32;
        for j in 1..624 {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// torch's `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled to [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }
}

/// Box-Muller over a block of 16 uniforms, pairing element j with j + 8, as torch does.
fn normal_fill_16(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0f32 * std::f64::consts::PI as f32 * u2;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

/// Standard normal samples in torch's order for `torch.randn(shape, generator=g)` on CPU.
pub fn torch_randn(seed: u64, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
    let shape: Shape = shape.into();
    let n = shape.elem_count();
    let mut rng = Mt19937::new(seed);
    let mut data: Vec<f32> = (0..n).map(|_| rng.uniform_f32()).collect();
    if n >= 16 {
        for start in (0..n - 15).step_by(16) {
            normal_fill_16(&mut data[start..start + 16]);
        }
        if !n.is_multiple_of(16) {
            // torch redraws the last 16 values when the size is not a multiple of 16.
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = rng.uniform_f32();
            }
            normal_fill_16(tail);
        }
    } else {
        // Tiny tensors: plain Box-Muller pairs (torch uses a different path here, so this
        // is seeded and reproducible but not torch's sequence).
        let mut i = 0;
        while i < n {
            let u1 = 1.0 - rng.uniform_f32();
            let u2 = rng.uniform_f32();
            let r = (-2.0 * u1.ln()).sqrt();
            let th = 2.0 * std::f32::consts::PI * u2;
            data[i] = r * th.cos();
            if i + 1 < n {
                data[i + 1] = r * th.sin();
            }
            i += 2;
        }
    }
    Tensor::from_vec(data, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The 10000th output of std::mt19937 seeded with 5489 is 4123659995 (C++ standard).
        let mut rng = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn randn_is_seeded_and_roughly_standard() {
        let a = torch_randn(7, (4, 1000), &Device::Cpu).unwrap();
        let b = torch_randn(7, (4, 1000), &Device::Cpu).unwrap();
        let c = torch_randn(8, (4, 1000), &Device::Cpu).unwrap();
        let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let vc: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        let var = va.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / va.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.1, "var {var}");
    }
}
