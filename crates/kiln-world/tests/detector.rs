//! The detector against ground truth: clean renders of 500 sampled scenes (both splits,
//! the three aspect sizes, 5 s and 10 s, with camera motion) and degraded renders.

use kiln_world::caption::PromptIntent;
use kiln_world::{
    degrade, detect, render, sample_scene, score, CameraMotion, Degradation, ScoreInputs, Split,
};

const SIZES: [(u32, u32); 3] = [(112, 64), (64, 112), (64, 64)];
const FPS: f32 = 8.0;

#[derive(Default, Debug)]
struct Tally {
    objects: usize,
    colour: usize,
    shape: usize,
    motion: usize,
    clips: usize,
    camera: usize,
    moving_camera: usize,
    failures: Vec<String>,
}

impl Tally {
    fn pct(n: usize, d: usize) -> f64 {
        100.0 * n as f64 / d.max(1) as f64
    }
    fn report(&self, label: &str) {
        println!(
            "{label}: {} clips ({} with camera motion), {} objects: colour {:.1}%, shape {:.1}%, \
             direction {:.1}%, camera {:.1}%",
            self.clips,
            self.moving_camera,
            self.objects,
            Self::pct(self.colour, self.objects),
            Self::pct(self.shape, self.objects),
            Self::pct(self.motion, self.objects),
            Self::pct(self.camera, self.clips),
        );
        for f in self.failures.iter().take(12) {
            println!("  miss: {f}");
        }
    }
}

fn run(count: u64, degradation: Option<Degradation>) -> Tally {
    let mut tally = Tally::default();
    for i in 0..count {
        let split = if i % 4 == 3 {
            Split::HeldOut
        } else {
            Split::Train
        };
        let spec = sample_scene(1000 + i, split);
        let (w, h) = SIZES[(i % 3) as usize];
        let frames = if i % 5 == 0 { 81 } else { 41 };
        let clip = render(&spec, w, h, frames, FPS).expect("render");
        let pixels = match &degradation {
            Some(d) => degrade(&clip.frames, w, h, frames, d, i).expect("degrade"),
            None => clip.frames.clone(),
        };
        let detection = detect(&pixels, w, h, frames, FPS).expect("detect");
        let intent = PromptIntent::from_spec(&spec);
        let s = score(&intent, &detection, &pixels, &ScoreInputs::default()).expect("score");
        tally.clips += 1;
        tally.moving_camera += usize::from(spec.camera != CameraMotion::Static);
        tally.camera += usize::from(s.camera_ok);
        if !s.camera_ok {
            tally.failures.push(format!(
                "scene {i} {w}x{h}x{frames}: camera {:?} expected {:?} got {:?} rates {:?}",
                spec.camera,
                spec.camera.signature(),
                detection.camera.signature,
                detection.camera.rates
            ));
        }
        for (o, spec_o) in s.objects.iter().zip(&spec.objects) {
            tally.objects += 1;
            tally.colour += usize::from(o.colour_ok);
            tally.shape += usize::from(o.shape_ok);
            tally.motion += usize::from(o.motion_ok);
            if !(o.colour_ok && o.shape_ok && o.motion_ok) {
                let found = detection.object(o.colour);
                tally.failures.push(format!(
                    "scene {i} {w}x{h}x{frames}: {:?} {:?} {:?} {:?} cam {:?} -> {:?}",
                    spec_o.colour,
                    spec_o.shape,
                    spec_o.size,
                    spec_o.motion,
                    spec.camera,
                    found.map(|d| (
                        d.shape,
                        d.shape_scores,
                        d.motion,
                        d.velocity,
                        d.log_area_rate
                    )),
                ));
            }
        }
    }
    tally
}

#[test]
fn detector_reads_clean_renders_of_500_scenes() {
    let t = run(500, None);
    t.report("clean");
    assert!(Tally::pct(t.colour, t.objects) >= 98.0);
    assert!(Tally::pct(t.shape, t.objects) >= 95.0);
    assert!(Tally::pct(t.motion, t.objects) >= 95.0);
    assert!(Tally::pct(t.camera, t.clips) >= 95.0);
    assert!(
        t.moving_camera * 2 > t.clips,
        "most clips should have camera motion"
    );
}

#[test]
fn detector_reads_degraded_renders() {
    let t = run(120, Some(Degradation::default()));
    t.report("degraded (blur 0.8 px, noise 4, shift 8)");
    assert!(Tally::pct(t.colour, t.objects) >= 97.0);
    assert!(Tally::pct(t.shape, t.objects) >= 90.0);
    assert!(Tally::pct(t.motion, t.objects) >= 90.0);
    assert!(Tally::pct(t.camera, t.clips) >= 90.0);
}
