//! kiln's bundled model layout — a transformer in the Wan image-to-video input form
//! (noise, 4 mask channels, condition latents) with a camera embedder — through
//! `WanPipeline`: it loads, generates text-only and with a camera, builds its text-only
//! conditioning exactly as kiln-train does, and models without an embedder refuse a camera.
//! The plain text-to-video path is held to diffusers by `pipeline_parity.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kiln_models::umt5::UMT5EncoderModel;
use kiln_models::wan::transformer::WanTransformer;
use kiln_models::wan::vae::WanVae;
use kiln_pipeline::conditioning::{camera_vector, mask_channels};
use kiln_pipeline::{
    CheckpointPaths, DynamicMask, GenerateRequest, PipelineError, VideoConditions, WanPipeline,
};
use kiln_train::checkpoint::{
    create_dir, model_index_json, save_varmap, scheduler_config_json, write_json,
};
use kiln_train::conditioning::sample_conditioning;
use kiln_train::data::{clip_batch, gaussian, rng_for, Stream};
use kiln_train::init::initialise;
use kiln_train::tokenizer::{tokenizer_config_json, tokenizer_json};
use kiln_train::{ClipGeometry, ConditionRates, ModelSizes, FLOW_SHIFT};
use kiln_world::{CameraAxes, CameraMotion, CameraPreset};

const FRAMES: usize = 5;
const HEIGHT: usize = 16;
const WIDTH: usize = 32;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Writes `dir/model`: kiln-train's tiny sizes in the export's layout and file names, with
/// seeded weights. The camera embedder's output layer, zero in a fresh training run, is
/// made random so that the camera visibly changes the output.
fn write_tiny_bundled(dir: &Path) -> PathBuf {
    let device = Device::Cpu;
    let model = dir.join("model");
    for sub in [
        "tokenizer",
        "text_encoder",
        "transformer",
        "vae",
        "scheduler",
    ] {
        create_dir(&model.join(sub)).unwrap();
    }
    let sizes = ModelSizes::tiny();
    let words: BTreeSet<String> = ["a", "red", "blue", "circle", "square", "moves", "right"]
        .iter()
        .map(|w| w.to_string())
        .collect();
    let vocab_size = words.len() + 3;
    write_json(
        &model.join("model_index.json"),
        &model_index_json(sizes.text_len),
    )
    .unwrap();
    write_json(
        &model.join("tokenizer/tokenizer.json"),
        &tokenizer_json(&words),
    )
    .unwrap();
    write_json(
        &model.join("tokenizer/tokenizer_config.json"),
        &tokenizer_config_json(sizes.text_len),
    )
    .unwrap();
    write_json(
        &model.join("scheduler/scheduler_config.json"),
        &scheduler_config_json(FLOW_SHIFT),
    )
    .unwrap();

    let mut rng = rng_for(3, 0, Stream::Initialisation);
    let vb = |map: &VarMap| VarBuilder::from_varmap(map, DType::F32, &device);

    let te_cfg = sizes.text_encoder_config(vocab_size).unwrap();
    let te_map = VarMap::new();
    UMT5EncoderModel::new(&te_cfg, vb(&te_map)).unwrap();
    initialise(&te_map, &mut rng).unwrap();
    write_json(
        &model.join("text_encoder/config.json"),
        &sizes.text_encoder_config_json(vocab_size),
    )
    .unwrap();
    save_varmap(&te_map, &model.join("text_encoder/model.safetensors")).unwrap();

    let tr_cfg = sizes.transformer_config().unwrap();
    let tr_map = VarMap::new();
    WanTransformer::new(&tr_cfg, vb(&tr_map)).unwrap();
    initialise(&tr_map, &mut rng).unwrap();
    {
        let data = tr_map.data().lock().unwrap();
        let mut touched = 0;
        for (name, var) in data.iter() {
            if name.contains("camera_embedder.linear_2") {
                let values: Vec<f32> = gaussian(&mut rng, var.elem_count())
                    .into_iter()
                    .map(|v| v * 0.5)
                    .collect();
                var.set(&Tensor::from_vec(values, var.dims(), &device).unwrap())
                    .unwrap();
                touched += 1;
            }
        }
        assert_eq!(touched, 2, "camera embedder linear_2 weight and bias");
    }
    write_json(
        &model.join("transformer/config.json"),
        &sizes.transformer_config_json(),
    )
    .unwrap();
    save_varmap(
        &tr_map,
        &model.join("transformer/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();

    // Latent statistics away from (0, 1) so that normalisation is exercised.
    let z = sizes.vae_z_dim;
    let mean: Vec<f64> = (0..z).map(|c| 0.1 * c as f64 - 0.1).collect();
    let std: Vec<f64> = (0..z).map(|c| 0.5 + 0.25 * c as f64).collect();
    let vae_cfg = sizes.vae_config(&mean, &std).unwrap();
    let vae_map = VarMap::new();
    WanVae::new(&vae_cfg, vb(&vae_map)).unwrap();
    initialise(&vae_map, &mut rng).unwrap();
    write_json(
        &model.join("vae/config.json"),
        &sizes.vae_config_json(&mean, &std),
    )
    .unwrap();
    save_varmap(
        &vae_map,
        &model.join("vae/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    model
}

fn load(model: &Path) -> Result<WanPipeline, PipelineError> {
    let paths = CheckpointPaths {
        model: model.to_path_buf(),
        ..Default::default()
    };
    WanPipeline::load(&paths, DType::F32, &Device::Cpu)
}

fn request(camera: Option<[f64; 6]>) -> GenerateRequest {
    GenerateRequest {
        prompt: "a red circle moves right".into(),
        negative_prompt: String::new(),
        num_frames: FRAMES,
        height: HEIGHT,
        width: WIDTH,
        steps: 2,
        guidance_scale: 2.0,
        seed: 1,
        init_latents: None,
        camera,
        conditions: Default::default(),
    }
}

fn generate(pipe: &WanPipeline, camera: Option<[f64; 6]>) -> Tensor {
    pipe.generate(&request(camera), &mut |_| true)
        .expect("generate")
        .video
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn error_text(r: Result<Tensor, PipelineError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bundled_layout_generates_text_only_and_with_camera() {
    let dir = scratch("bundled");
    let model = write_tiny_bundled(&dir);
    let pipe = load(&model).expect("the bundled layout loads");
    let g = pipe.geometry();
    assert_eq!(g.latent_channels, 4);
    assert_eq!(g.conditioning_channels, 4 + 4);
    assert_eq!(g.camera_dim, Some(7));
    // The text length the model was trained at, read back from model_index.json.
    assert_eq!(g.max_sequence_length, ModelSizes::tiny().text_len);
    let text = pipe.encode_prompt("a red circle moves right").unwrap();
    assert_eq!(text.dims()[1], ModelSizes::tiny().text_len);

    let text_only = generate(&pipe, None);
    assert_eq!(text_only.dims(), &[FRAMES, HEIGHT, WIDTH, 3]);
    let values: Vec<f32> = text_only.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    // Deterministic, the cached conditioning included.
    assert_eq!(max_abs_diff(&text_only, &generate(&pipe, None)), 0.0);

    let moving = generate(&pipe, Some([3.0, 0.0, -2.0, 0.0, 0.0, 5.0]));
    let d = max_abs_diff(&text_only, &moving);
    assert!(d > 1e-4, "a camera changed nothing (max diff {d})");
    // A given still camera is not "no camera": the flag differs.
    let still = generate(&pipe, Some([0.0; 6]));
    let d = max_abs_diff(&text_only, &still);
    assert!(d > 1e-6, "a still camera equals no camera (max diff {d})");

    let err = error_text(
        pipe.generate(&request(Some([0.0, 0.0, 0.0, 0.0, 0.0, 11.0])), &mut |_| {
            true
        })
        .map(|g| g.video),
    );
    assert!(err.contains("--camera zoom = 11"), "{err}");
    let err = error_text(
        pipe.generate(&request(Some([f64::NAN; 6])), &mut |_| true)
            .map(|g| g.video),
    );
    assert!(err.contains("--camera horizontal"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_only_conditioning_is_what_training_feeds() {
    let dir = scratch("nothing-given");
    let model = write_tiny_bundled(&dir);
    let pipe = load(&model).unwrap();
    let device = Device::Cpu;

    // kiln-train's path: its frozen VAE (plain tensors from the export) and a batch
    // that draws no conditioning at all.
    let vae_cfg = kiln_models::read_config(&model.join("vae/config.json"), "VAE config").unwrap();
    let tensors = candle_core::safetensors::load(
        model.join("vae/diffusion_pytorch_model.safetensors"),
        &device,
    )
    .unwrap();
    let vae = WanVae::new(
        &vae_cfg,
        VarBuilder::from_tensors(tensors, DType::F32, &device),
    )
    .unwrap();
    let geometry = ClipGeometry {
        sizes: vec![(WIDTH as u32, HEIGHT as u32)],
        frame_counts: vec![FRAMES],
        ..ClipGeometry::tiny()
    };
    let batch = clip_batch(&geometry, 0, 0, 1, Stream::Scenes, &device).unwrap();
    let none = ConditionRates {
        first_frame: 0.0,
        last_frame: 0.0,
        static_region: 0.0,
        object_track: 0.0,
        ..ConditionRates::default()
    };
    let mut rng = rng_for(0, 0, Stream::Conditioning);
    let cond = sample_conditioning(&batch, &none, &mut rng, 8, 4, &device).unwrap();
    let latents = vae.normalize(&vae.encode(&cond.video).unwrap()).unwrap();
    let training = Tensor::cat(&[&cond.mask_channels, &latents], 1).unwrap();

    let ours = |frames| {
        pipe.text_only_condition(frames, HEIGHT, WIDTH)
            .unwrap()
            .expect("an image-to-video input model has conditioning channels")
    };
    let fresh = ours(FRAMES);
    assert_eq!(fresh.dims(), training.dims());
    assert_eq!(max_abs_diff(&fresh, &training), 0.0);
    // A longer clip replaces the cache; the shorter one is then its causal prefix.
    assert_eq!(ours(FRAMES + 8).dim(2).unwrap(), 4);
    assert_eq!(max_abs_diff(&ours(FRAMES), &training), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn camera_vector_matches_training() {
    let mut motions = vec![CameraMotion::Static];
    motions.extend(CameraPreset::ALL.iter().map(|&p| CameraMotion::Preset(p)));
    motions.push(CameraMotion::Axes(CameraAxes::from_array([
        -10, 10, -7, 3, -1, 9,
    ])));
    for motion in motions {
        let axes = motion.axes().to_array().map(f64::from);
        assert_eq!(
            camera_vector(axes),
            kiln_train::data::camera_vector(motion),
            "{motion:?}"
        );
    }
}

#[test]
fn plain_models_are_unchanged_and_refuse_a_camera() {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan/tiny_cfg/model");
    let pipe = load(&model).expect("fixture checkpoint loads");
    let g = pipe.geometry();
    assert_eq!(g.conditioning_channels, 0);
    assert_eq!(g.camera_dim, None);
    assert!(pipe.text_only_condition(5, 16, 16).unwrap().is_none());

    let mut req = request(Some([0.0, 0.0, 5.0, 0.0, 0.0, 0.0]));
    req.width = 16;
    let err = error_text(pipe.generate(&req, &mut |_| true).map(|g| g.video));
    assert!(
        err.contains("--camera") && err.contains("this model has no camera control"),
        "{err}"
    );
}

/// RGB8 frame `t` of clip 0 of a training batch (its video is `u8 / 127.5 − 1`).
fn batch_frame(video: &Tensor, t: usize) -> Vec<u8> {
    let frame = video
        .get(0)
        .unwrap()
        .narrow(1, t, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let hwc = frame.permute((1, 2, 0)).unwrap().flatten_all().unwrap();
    let v: Vec<f32> = hwc.to_vec1().unwrap();
    v.iter()
        .map(|x| ((x + 1.0) * 127.5).round() as u8)
        .collect()
}

#[test]
fn first_and_last_frame_conditioning_is_what_training_feeds() {
    let device = Device::Cpu;
    let geometry = ClipGeometry {
        sizes: vec![(WIDTH as u32, HEIGHT as u32)],
        frame_counts: vec![9],
        ..ClipGeometry::tiny()
    };
    let batch = clip_batch(&geometry, 5, 2, 1, Stream::Scenes, &device).unwrap();
    let both = ConditionRates {
        first_frame: 1.0,
        last_frame: 1.0,
        static_region: 0.0,
        object_track: 0.0,
        ..ConditionRates::default()
    };
    let mut rng = rng_for(5, 2, Stream::Conditioning);
    let training = sample_conditioning(&batch, &both, &mut rng, 8, 4, &device).unwrap();

    let conditions = VideoConditions {
        first_frame: Some(batch_frame(&batch.video, 0)),
        last_frame: Some(batch_frame(&batch.video, 8)),
        ..Default::default()
    };
    conditions.validate(HEIGHT, WIDTH).unwrap();
    let (known, video) = conditions.known_pixels(9, HEIGHT, WIDTH);
    let train_video: Vec<f32> = training.video.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(video, train_video);
    let channels = mask_channels(&known, 9, HEIGHT, WIDTH, 8, 4);
    let train_channels: Vec<f32> = training
        .mask_channels
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(channels, train_channels);
    // Latent frame 0 is the first frame in all four channels; frame 1 (pixel frames 1-4)
    // is unknown; frame 2's last channel is pixel frame 8, the last frame.
    let cells = (HEIGHT / 8) * (WIDTH / 8);
    let at = |j: usize, i: usize| channels[(j * 3 + i) * cells];
    assert_eq!(
        [at(0, 0), at(3, 0), at(0, 1), at(2, 2), at(3, 2)],
        [1.0, 1.0, 0.0, 0.0, 1.0]
    );
}

#[test]
fn masks_carry_first_frame_pixels() {
    let (h, w, f) = (8usize, 8usize, 5usize);
    let first: Vec<u8> = (0..h * w * 3).map(|i| (i % 251) as u8).collect();
    let mut mask = vec![false; h * w];
    mask[2 * w + 1] = true; // pixel (x 1, y 2)
    let conditions = VideoConditions {
        first_frame: Some(first.clone()),
        static_mask: Some(mask.clone()),
        dynamic_masks: vec![DynamicMask {
            mask: mask.clone(),
            trajectory: vec![[1.0, 2.0], [5.0, 2.0]],
        }],
        ..Default::default()
    };
    conditions.validate(h, w).unwrap();
    let (known, video) = conditions.known_pixels(f, h, w);
    let plane = h * w;
    // Static: the pixel stays known at (1, 2) in every frame. Dynamic: it moves 1 px per
    // frame to the right (4 px over 4 frame steps).
    for t in 0..f {
        assert!(known[t * plane + 2 * w + 1]);
        let p = 2 * w + 1 + t;
        assert!(known[t * plane + p], "frame {t}");
        let red = video[t * plane + p];
        assert_eq!(red, f32::from(first[3 * (2 * w + 1)]) / 127.5 - 1.0);
    }
    assert_eq!(known.iter().filter(|&&k| k).count(), plane + 2 * (f - 1));

    let no_image = VideoConditions {
        static_mask: Some(mask),
        ..Default::default()
    };
    let err = no_image.validate(h, w).unwrap_err();
    assert!(err.contains("add --image"), "{err}");
    let wrong = VideoConditions {
        first_frame: Some(vec![0; 10]),
        ..Default::default()
    };
    assert!(wrong
        .validate(h, w)
        .unwrap_err()
        .contains("--image: 10 bytes"));
}

#[test]
fn generate_takes_conditions_and_text_models_refuse_them() {
    let dir = scratch("conditions");
    let model = write_tiny_bundled(&dir);
    let pipe = load(&model).unwrap();
    let mut req = request(None);
    let first: Vec<u8> = (0..HEIGHT * WIDTH * 3)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    req.conditions.first_frame = Some(first);
    let with_image = pipe.generate(&req, &mut |_| true).unwrap().video;
    let d = max_abs_diff(&with_image, &generate(&pipe, None));
    assert!(d > 1e-4, "a first frame changed nothing (max diff {d})");
    let _ = std::fs::remove_dir_all(&dir);

    let plain =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan/tiny_cfg/model");
    let pipe = load(&plain).unwrap();
    req.width = 16;
    req.conditions.first_frame = Some(vec![0; HEIGHT * 16 * 3]);
    let err = error_text(pipe.generate(&req, &mut |_| true).map(|g| g.video));
    assert!(err.contains("this model takes text only"), "{err}");
}

#[test]
fn camera_presets_match_the_world() {
    for preset in CameraPreset::ALL {
        let axes =
            kiln_pipeline::conditioning::camera_preset(preset.kling_name()).expect("known preset");
        assert_eq!(axes, preset.axes().to_array().map(f64::from), "{preset:?}");
    }
    assert!(kiln_pipeline::conditioning::camera_preset("sideways").is_none());
}

#[test]
fn shipped_text_only_conditions_equal_the_encode_and_follow_the_vae() {
    let dir = scratch("condition-cache");
    let model = write_tiny_bundled(&dir);
    let fresh = load(&model).unwrap();
    let computed = fresh
        .text_only_condition(FRAMES, HEIGHT, WIDTH)
        .unwrap()
        .unwrap();
    let path = fresh
        .write_condition_cache(&model, &[(WIDTH, HEIGHT)], 9)
        .unwrap();
    assert!(path.is_file());

    let cached = load(&model).unwrap();
    let t = cached
        .text_only_condition(FRAMES, HEIGHT, WIDTH)
        .unwrap()
        .unwrap();
    assert_eq!(max_abs_diff(&t, &computed), 0.0);
    // And generation is unchanged by where the condition came from.
    assert_eq!(
        max_abs_diff(&generate(&cached, None), &generate(&fresh, None)),
        0.0
    );

    // Other VAE weights: the cache no longer matches and is ignored (recomputed).
    let vae_file = model.join("vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&vae_file, &Device::Cpu).unwrap();
    // The input is all zeros, so only a bias reaches the encoding.
    let name = "encoder.conv_in.bias".to_string();
    let w = (tensors[&name].clone() + 0.5).unwrap();
    tensors.insert(name, w);
    candle_core::safetensors::save(&tensors, &vae_file).unwrap();
    let changed = load(&model).unwrap();
    let recomputed = changed
        .text_only_condition(FRAMES, HEIGHT, WIDTH)
        .unwrap()
        .unwrap();
    assert!(max_abs_diff(&recomputed, &computed) > 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompts_past_the_text_length_truncate_as_in_training() {
    let dir = scratch("truncate");
    let model = write_tiny_bundled(&dir);
    let path = model.join("tokenizer/tokenizer.json");
    let training = kiln_train::CaptionTokenizer::from_file(&path).unwrap();
    let text = "a red circle moves right a blue square";
    for max_len in [3, 5, 9, 64] {
        let pipeline = kiln_pipeline::prompt::PromptTokenizer::from_file(&path, max_len).unwrap();
        let tokens = pipeline.encode(text, &Device::Cpu).unwrap();
        let ids: Vec<u32> = tokens.input_ids.flatten_all().unwrap().to_vec1().unwrap();
        let batch = training
            .encode_batch(&[text.to_string()], max_len, &Device::Cpu)
            .unwrap();
        let trained: Vec<u32> = batch.input_ids.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&ids[..tokens.len], &trained[..], "max_len {max_len}");
        assert_eq!(
            *trained.last().unwrap(),
            1,
            "ends with </s> (max_len {max_len})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
