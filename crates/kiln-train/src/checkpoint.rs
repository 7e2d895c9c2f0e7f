//! Training checkpoints (weights, optimizer moments, a JSON state) and the export of the
//! trained components into the diffusers folder layout that `WanPipeline::load` reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::conditioning::ConditionRates;
use crate::error::{io_err, Result, TrainError};
use crate::optim::AdamWConfig;
use crate::sizes::{ClipGeometry, ModelSizes};

/// `state.json` of a training run. Randomness is a pure function of (seed, step, stream)
/// (see `data::rng_for`), so `seed` and `step` are the whole RNG state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub stage: String,
    /// Optimizer updates done; the next step to run.
    pub step: u64,
    pub seed: u64,
    pub batch: usize,
    pub optimizer: AdamWConfig,
    pub sizes: ModelSizes,
    pub geometry: ClipGeometry,
    pub rates: ConditionRates,
    /// The `--object-weight` of the latest session (1 in states written before it).
    #[serde(default = "unit_weight")]
    pub object_weight: f64,
    /// VAE stage: the decoder trained alone.
    #[serde(default)]
    pub freeze_encoder: bool,
    /// The exported model the run started from (`--init-from`), if any.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    pub rng: String,
    pub last_loss: Option<f64>,
    /// Training wall time over all sessions of this run.
    pub wall_seconds: f64,
}

fn unit_weight() -> f64 {
    1.0
}

/// Writes via a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Where a checkpoint is written before it replaces the previous one.
pub const STAGING_DIR: &str = ".checkpoint-next";

/// Moves a checkpoint written whole into `staging` over the one in `dir`, `state.json`
/// last. Every file is written before any is replaced, so a failed write (a full disk)
/// leaves the previous checkpoint intact and consistent; renames need no space.
pub fn commit_staged(staging: &Path, dir: &Path) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(staging)
        .map_err(io_err(staging))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| !n.to_string_lossy().ends_with(".tmp"))
        .collect();
    // The state names the step of the files beside it, so it goes last.
    names.sort_by_key(|n| n == "state.json");
    for name in names {
        let to = dir.join(&name);
        std::fs::rename(staging.join(&name), &to).map_err(io_err(&to))?;
    }
    Ok(())
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(path, |tmp| {
        let text =
            serde_json::to_string_pretty(value).map_err(|e| TrainError::Options(e.to_string()))?;
        std::fs::write(tmp, text + "\n").map_err(io_err(tmp))
    })
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Invalid {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

pub fn save_varmap(map: &VarMap, path: &Path) -> Result<()> {
    write_atomic(path, |tmp| Ok(map.save(tmp)?))
}

/// Copies the exported model folder `from` (files and their subfolders) to `to`, which
/// must not exist: a run started from another model gets its own copy to export into.
pub fn copy_model_dir(from: &Path, to: &Path) -> Result<()> {
    create_dir(to)?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_model_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// The loss log: one JSON object per step, appended as training goes.
pub struct LossLog {
    file: std::fs::File,
    path: PathBuf,
}

impl LossLog {
    /// Opens `path`, keeping only the records of steps before `resume_step` (records
    /// written after the last checkpoint of an interrupted run are dropped).
    pub fn open(path: &Path, resume_step: u64) -> Result<Self> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .is_some_and(|s| s < resume_step)
                })
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut file = std::fs::File::create(path).map_err(io_err(path))?;
        for line in kept {
            writeln!(file, "{line}").map_err(io_err(path))?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn append(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(io_err(&self.path))
    }
}

/// `model_index.json` of the bundled model. The class is `WanPipeline` so the existing
/// loader accepts the folder; `kiln_conditioning` tells kiln the transformer takes the
/// image-to-video input (noise, 4 mask channels, condition latents) and a camera vector;
/// `kiln_defaults.max_sequence_length` is the text length the model was trained at.
pub fn model_index_json(text_len: usize) -> Value {
    json!({
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "boundary_ratio": null,
        "expand_timesteps": false,
        "kiln_conditioning": {"input": "wan-i2v-concat", "mask_channels": 4, "camera_dim": crate::sizes::CAMERA_DIM},
        // Request defaults for `kiln generate` (kiln-pipeline's `ModelDefaults`): the clip
        // geometry this model is trained at, and no negative prompt (training drops captions
        // to the empty prompt, and Wan's default negative prompt is outside its vocabulary).
        "kiln_defaults": {
            "fps": 8,
            "seconds": 5,
            "sizes": {"16:9": [112, 64], "9:16": [64, 112], "1:1": [64, 64]},
            "steps": 10,
            "guidance_scale": 4.0,
            "negative_prompt": "",
            "max_sequence_length": text_len
        },
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": [null, null],
        "vae": ["diffusers", "AutoencoderKLWan"]
    })
}

/// `scheduler/scheduler_config.json`: Wan's UniPC with the flow shift used in training.
pub fn scheduler_config_json(flow_shift: f64) -> Value {
    json!({
        "_class_name": "UniPCMultistepScheduler",
        "_diffusers_version": "0.42.1",
        "disable_corrector": [],
        "final_sigmas_type": "zero",
        "flow_shift": flow_shift,
        "lower_order_final": true,
        "num_train_timesteps": 1000,
        "predict_x0": true,
        "prediction_type": "flow_prediction",
        "shift_terminal": null,
        "solver_order": 2,
        "solver_p": null,
        "solver_type": "bh2",
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "linspace",
        "use_beta_sigmas": false,
        "use_dynamic_shifting": false,
        "use_exponential_sigmas": false,
        "use_flow_sigmas": true,
        "use_karras_sigmas": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_checkpoint_replaces_the_previous_one_whole() {
        let dir = std::env::temp_dir().join(format!("kiln-staged-{}", std::process::id()));
        let staging = dir.join(STAGING_DIR);
        std::fs::create_dir_all(&staging).unwrap();
        for (name, text) in [("weights", "old"), ("state.json", "1")] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        // A write that died half way leaves only a .tmp, which is never moved.
        std::fs::write(staging.join("optimizer.tmp"), "partial").unwrap();
        std::fs::write(staging.join("weights"), "new").unwrap();
        std::fs::write(staging.join("state.json"), "2").unwrap();
        commit_staged(&staging, &dir).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(
            (read("weights"), read("state.json")),
            ("new".into(), "2".into())
        );
        assert!(!dir.join("optimizer.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
