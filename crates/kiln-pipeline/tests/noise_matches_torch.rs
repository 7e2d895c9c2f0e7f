//! Seeded noise against torch.randn (fixture from scripts/reference/torch_randn.py).

use std::path::PathBuf;

use candle_core::Device;
use kiln_pipeline::noise::torch_randn;

#[test]
fn seeded_noise_matches_torch_randn() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/noise/torch_randn.safetensors");
    let reference = candle_core::safetensors::load(path, &Device::Cpu).expect("noise fixture");
    assert_eq!(reference.len(), 4);
    for (name, want) in reference {
        let seed: u64 = name.split('_').nth(1).unwrap().parse().unwrap();
        let got = torch_randn(seed, want.shape(), &Device::Cpu).unwrap();
        let diff: f32 = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        // torch's AVX2/AVX-512 path uses vectorised log/sin/cos (≤ 1 ulp apart from libm).
        assert!(diff < 1e-5, "{name}: max diff {diff}");
    }
}
