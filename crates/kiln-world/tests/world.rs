//! Scenes, renders, captions and the held-out split.

use kiln_world::caption::PromptIntent;
use kiln_world::scene::{MotionClass, HELD_OUT_CAMERA, HELD_OUT_OBJECTS};
use kiln_world::{
    caption, captions, is_held_out, parse_prompt, render, sample_scene, sample_scene_with,
    BackgroundColour, CameraAxes, CameraMotion, ObjectColour, SceneSpec, Split, SplitMix64,
    WorldError, MAX_OBJECTS,
};

#[test]
fn splitmix64_matches_reference_values() {
    // Reference outputs of SplitMix64 seeded with 1234567 (Vigna's published generator).
    let mut rng = SplitMix64::new(1234567);
    let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
    assert_eq!(
        got,
        [
            6457827717110365317,
            3203168211198807973,
            9817491932198370423
        ]
    );
}

#[test]
fn scenes_and_renders_are_deterministic() {
    for seed in [0u64, 7, 123_456_789] {
        for split in [Split::Train, Split::HeldOut] {
            let a = sample_scene(seed, split);
            let b = sample_scene(seed, split);
            assert_eq!(a, b);
            let json = serde_json::to_string(&a).expect("serialise");
            let back: SceneSpec = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(a, back);
            let ra = render(&a, 112, 64, 9, 8.0).expect("render");
            let rb = render(&b, 112, 64, 9, 8.0).expect("render");
            assert_eq!(ra, rb);
        }
    }
    assert_ne!(sample_scene(1, Split::Train), sample_scene(2, Split::Train));
}

#[test]
fn sampled_scenes_respect_the_world_rules() {
    for seed in 0..2000 {
        let spec = sample_scene(
            seed,
            if seed % 2 == 0 {
                Split::Train
            } else {
                Split::HeldOut
            },
        );
        assert!((1..=3).contains(&spec.objects.len()), "seed {seed}");
        let mut colours: Vec<ObjectColour> = spec.objects.iter().map(|o| o.colour).collect();
        colours.sort();
        colours.dedup();
        assert_eq!(
            colours.len(),
            spec.objects.len(),
            "distinct colours, seed {seed}"
        );
        for a in spec.camera.axes().to_array() {
            assert!((-10..=10).contains(&a));
        }
    }
}

#[test]
fn renders_have_no_empty_borders_and_truth_matches_pixels() {
    // A strong zoom out with roll would expose the canvas edge if the background were
    // not defined over the whole plane; no pixel may stay at the zero fill.
    let mut spec = sample_scene(5, Split::Train);
    spec.camera = CameraMotion::Axes(CameraAxes {
        roll: 10,
        zoom: -10,
        ..CameraAxes::ZERO
    });
    let clip = render(&spec, 64, 112, 81, 8.0).expect("render");
    assert_eq!(clip.frames.len(), 81 * 112 * 64 * 3);
    let last = clip.frame(80);
    assert!(last.chunks_exact(3).all(|p| p != [0, 0, 0]));
    for (f, truth) in clip.truth.iter().enumerate() {
        for (k, o) in truth.objects.iter().enumerate() {
            let ids = &clip.object_ids[f * 64 * 112..(f + 1) * 64 * 112];
            let count = ids.iter().filter(|&&i| i as usize == k + 1).count() as u32;
            assert_eq!(count, o.visible_pixels);
        }
    }
    assert!(matches!(
        render(&spec, 0, 64, 1, 8.0),
        Err(WorldError::InvalidSize { .. })
    ));
    assert!(matches!(
        render(&spec, 64, 64, 1, 0.0),
        Err(WorldError::InvalidFps(_))
    ));
}

#[test]
fn render_is_fast() {
    let spec = sample_scene(11, Split::Train);
    let start = std::time::Instant::now();
    let clip = render(&spec, 112, 64, 41, 8.0).expect("render");
    let per_frame = start.elapsed().as_secs_f64() * 1000.0 / clip.frame_count as f64;
    println!("render: {per_frame:.3} ms per 112x64 frame");
    assert!(per_frame < 10.0);
}

#[test]
fn backgrounds_never_look_like_object_colours() {
    // Every blend of two background colours, with the texture at either extreme, stays
    // far from every object colour: the detector's colour segmentation relies on it.
    let mut closest = f32::MAX;
    for a in BackgroundColour::ALL {
        for b in BackgroundColour::ALL {
            for step in 0..=20 {
                let t = step as f32 / 20.0;
                for offset in [-14.0f32, 0.0, 14.0] {
                    let p: Vec<f32> = (0..3)
                        .map(|c| {
                            f32::from(a.rgb()[c]) * (1.0 - t) + f32::from(b.rgb()[c]) * t + offset
                        })
                        .collect();
                    for o in ObjectColour::ALL {
                        let d: f32 = (0..3)
                            .map(|c| (p[c] - f32::from(o.rgb()[c])).powi(2))
                            .sum::<f32>();
                        closest = closest.min(d.sqrt());
                    }
                }
            }
        }
    }
    assert!(
        closest > 2.0 * 40.0,
        "closest background blend to an object colour: {closest}"
    );
}

#[test]
fn held_out_split_is_disjoint_from_training() {
    let mut held_out_seen_objects = 0;
    let mut held_out_seen_camera = 0;
    for seed in 0..5000 {
        let train = sample_scene(seed, Split::Train);
        assert!(
            !is_held_out(&train),
            "train scene {seed} shows a held-out combination"
        );
        let held = sample_scene(seed, Split::HeldOut);
        assert!(
            is_held_out(&held),
            "held-out scene {seed} shows no held-out combination"
        );
        let sig = held.camera.signature();
        held_out_seen_objects += usize::from(
            held.objects
                .iter()
                .any(|o| HELD_OUT_OBJECTS.contains(&(o.colour, o.shape, o.motion.class()))),
        );
        held_out_seen_camera += usize::from(
            held.objects
                .iter()
                .any(|o| HELD_OUT_CAMERA.contains(&(o.shape, sig))),
        );
        // The parser sees the same split from any caption of the scene.
        let mut rng = SplitMix64::new(seed);
        let text = caption(&train, &mut rng);
        let intent = parse_prompt(&text).expect("parse train caption");
        assert!(!intent.is_held_out(), "{text}");
        let text = caption(&held, &mut rng);
        assert!(parse_prompt(&text).expect("parse").is_held_out(), "{text}");
    }
    assert!(held_out_seen_objects > 1000 && held_out_seen_camera > 1000);
    assert!(HELD_OUT_OBJECTS.iter().any(|t| t.2 == MotionClass::Grow));
}

#[test]
fn captions_round_trip_through_the_parser() {
    let mut failures = Vec::new();
    let mut total = 0;
    for seed in 0..3000u64 {
        let spec = sample_scene(
            seed,
            if seed % 3 == 0 {
                Split::HeldOut
            } else {
                Split::Train
            },
        );
        let truth = PromptIntent::from_spec(&spec);
        for text in captions(&spec, seed, 4) {
            total += 1;
            match parse_prompt(&text) {
                Some(intent) if intent.agrees_with(&truth) => {}
                other => failures.push(format!("{text}\n  -> {other:?}\n  truth {truth:?}")),
            }
        }
    }
    for f in failures.iter().take(5) {
        println!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {total} captions did not round-trip",
        failures.len()
    );
}

#[test]
fn captions_vary_and_read_naturally() {
    let spec = sample_scene(42, Split::Train);
    let texts = captions(&spec, 1, 12);
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert!(unique.len() >= 6, "{texts:#?}");
    for t in &texts {
        println!("{t}");
        assert!(t.chars().next().is_some_and(char::is_uppercase));
        assert!(t.ends_with('.'));
    }
}

#[test]
fn parser_reads_hand_written_prompts() {
    let p = parse_prompt("a red circle moves right").expect("parse");
    assert_eq!(p.objects.len(), 1);
    assert_eq!(p.objects[0].colour, ObjectColour::Red);
    assert_eq!(p.camera, CameraMotion::Static);
    let p = parse_prompt("camera zooms in: a yellow square grows").expect("parse");
    assert_eq!(p.camera.signature().zoom, 1);
    let p = parse_prompt(
        "On a dark gray backdrop, a small green triangle drifts upward while the camera pans left",
    )
    .expect("parse");
    assert_eq!(p.camera.signature().horizontal, -1);
    assert!(matches!(
        p.background,
        Some(kiln_world::Background::Solid {
            colour: BackgroundColour::DarkGray
        })
    ));
    assert!(parse_prompt("a sunset over the sea").is_none());
}

#[test]
fn kling_camera_control_maps_onto_the_world() {
    let down_back = CameraMotion::from_kling("down_back", CameraAxes::ZERO).expect("preset");
    let sig = down_back.signature();
    assert_eq!((sig.vertical, sig.zoom), (-1, -1));
    let simple = CameraMotion::from_kling(
        "simple",
        CameraAxes {
            horizontal: 3,
            zoom: 2,
            ..CameraAxes::ZERO
        },
    )
    .expect("simple");
    assert_eq!(simple.signature().horizontal, 1);
    assert!(CameraMotion::from_kling("orbit", CameraAxes::ZERO).is_err());
    assert!(CameraAxes::from_values([11, 0, 0, 0, 0, 0]).is_err());
    // Camera pans right: content slides left.
    let rates = CameraMotion::pan_right().rates();
    assert!(rates.translate_x < 0.0);
}

#[test]
fn an_object_limit_keeps_the_scenes_within_it() {
    let mut cut = 0;
    for seed in 0..600u64 {
        let full = sample_scene(seed, Split::Train);
        assert_eq!(sample_scene_with(seed, Split::Train, MAX_OBJECTS), full);
        for limit in 1..MAX_OBJECTS {
            let limited = sample_scene_with(seed, Split::Train, limit);
            assert!(
                (1..=limit).contains(&limited.objects.len()),
                "seed {seed}: {} objects over the limit {limit}",
                limited.objects.len()
            );
            assert!(!is_held_out(&limited), "seed {seed}: a held-out scene");
            if full.objects.len() > limit {
                cut += 1;
            }
            // The background and the first object's colour, shape, size and motion are
            // drawn before the object count, so the limit keeps them.
            assert_eq!(limited.background, full.background, "seed {seed}");
            let (a, b) = (&limited.objects[0], &full.objects[0]);
            assert_eq!(
                (a.colour, a.shape, a.size, a.motion),
                (b.colour, b.shape, b.size, b.motion),
                "seed {seed}"
            );
        }
    }
    assert!(cut > 300, "only {cut} scenes were cut");
}
