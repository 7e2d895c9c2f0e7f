//! A checkpoint's request defaults: Wan 2.1's unless `model_index.json` carries a
//! `kiln_defaults` object (kiln's bundled model renders small clips at 8 fps, has no use for
//! Wan's negative prompt, and needs fewer steps).

use serde::{Deserialize, Serialize};

use crate::request::DEFAULT_NEGATIVE_PROMPT;

/// Width and height for each of the seeds' aspect ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AspectSizes {
    #[serde(rename = "16:9")]
    pub landscape: [usize; 2],
    #[serde(rename = "9:16")]
    pub portrait: [usize; 2],
    #[serde(rename = "1:1")]
    pub square: [usize; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelDefaults {
    /// Frames per second the model was trained at; durations convert at this rate.
    pub fps: u32,
    /// Default clip length in seconds (frames = seconds · fps + 1).
    pub seconds: u32,
    pub sizes: AspectSizes,
    pub steps: usize,
    pub guidance_scale: f64,
    pub negative_prompt: String,
    /// Rows the prompt embeddings are padded to (longer prompts are truncated): the text
    /// length the transformer was trained with.
    pub max_sequence_length: usize,
}

impl Default for ModelDefaults {
    /// Wan 2.1's: 16 fps, 81 frames at 832×480, 50 steps, guidance 5.
    fn default() -> Self {
        Self {
            fps: 16,
            seconds: 5,
            sizes: AspectSizes {
                landscape: [832, 480],
                portrait: [480, 832],
                square: [624, 624],
            },
            steps: 50,
            guidance_scale: 5.0,
            negative_prompt: DEFAULT_NEGATIVE_PROMPT.to_string(),
            max_sequence_length: 512,
        }
    }
}

impl ModelDefaults {
    /// From a parsed `model_index.json`; a malformed `kiln_defaults` is an error that names
    /// the field.
    pub fn from_model_index(index: &serde_json::Value) -> Result<Self, String> {
        match index.get("kiln_defaults") {
            None => Ok(Self::default()),
            Some(v) => {
                let defaults: Self = serde_json::from_value(v.clone())
                    .map_err(|e| format!("kiln_defaults: {e}; fix or remove it"))?;
                if defaults.max_sequence_length == 0 {
                    return Err("kiln_defaults: max_sequence_length is 0; it must be the text length the model was trained with (Wan: 512)".into());
                }
                Ok(defaults)
            }
        }
    }

    /// The frame count of a clip of `seconds` at this model's rate.
    pub fn frames_for_seconds(&self, seconds: f64) -> usize {
        (seconds * f64::from(self.fps)).round() as usize + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_defaults_without_kiln_defaults() {
        let d = ModelDefaults::from_model_index(&serde_json::json!({})).unwrap();
        assert_eq!(d.frames_for_seconds(5.0), 81);
        assert_eq!(d.sizes.landscape, [832, 480]);
        assert_eq!(d.max_sequence_length, 512);
    }

    #[test]
    fn kiln_defaults_are_read_and_checked() {
        let index = serde_json::json!({"kiln_defaults": {
            "fps": 8, "sizes": {"16:9": [112, 64], "9:16": [64, 112], "1:1": [64, 64]},
            "steps": 10, "negative_prompt": ""}});
        let d = ModelDefaults::from_model_index(&index).unwrap();
        assert_eq!((d.fps, d.steps, d.frames_for_seconds(10.0)), (8, 10, 81));
        assert_eq!(d.sizes.portrait, [64, 112]);
        assert_eq!(d.guidance_scale, 5.0);
        assert_eq!(
            d.max_sequence_length, 512,
            "Wan's text length unless it is given"
        );
        let short = serde_json::json!({"kiln_defaults": {"max_sequence_length": 64}});
        let d = ModelDefaults::from_model_index(&short).unwrap();
        assert_eq!((d.max_sequence_length, d.fps), (64, 16));
        let zero = serde_json::json!({"kiln_defaults": {"max_sequence_length": 0}});
        assert!(ModelDefaults::from_model_index(&zero)
            .unwrap_err()
            .contains("max_sequence_length"));
        let bad = serde_json::json!({"kiln_defaults": {"fps": "fast"}});
        assert!(ModelDefaults::from_model_index(&bad)
            .unwrap_err()
            .contains("kiln_defaults"));
    }
}
