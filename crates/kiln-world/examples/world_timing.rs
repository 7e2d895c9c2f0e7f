//! Times rendering and detection at the bundled model's sizes.
use std::time::Instant;

use kiln_world::{degrade, detect, render, sample_scene, Degradation, Split};

fn main() {
    for (w, h) in [(112u32, 64u32), (64, 112), (64, 64)] {
        let (mut r, mut d, mut g) = (0.0, 0.0, 0.0);
        let n = 20;
        for seed in 0..n {
            let spec = sample_scene(seed, Split::Train);
            let t = Instant::now();
            let clip = render(&spec, w, h, 41, 8.0).expect("render");
            r += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let bad =
                degrade(&clip.frames, w, h, 41, &Degradation::default(), seed).expect("degrade");
            g += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let _ = detect(&bad, w, h, 41, 8.0).expect("detect");
            d += t.elapsed().as_secs_f64();
        }
        let per = |x: f64| x / n as f64 * 1000.0;
        println!(
            "{w}x{h}: render {:.3} ms/frame, degrade {:.1} ms/clip, detect {:.1} ms/clip (41 frames)",
            per(r) / 41.0,
            per(g),
            per(d)
        );
    }
}
