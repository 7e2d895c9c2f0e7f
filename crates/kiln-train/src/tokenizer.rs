//! The bundled model's own tokenizer: a word-level `tokenizer.json` (lower-casing, split on
//! whitespace and punctuation, `</s>` appended as T5 does) whose vocabulary is every word
//! the caption grammar of `kiln-world` produces. Ids: `<pad>` 0, `</s>` 1, `<unk>` 2, then
//! the words in byte order, so the file is the same on every build.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use kiln_world::{caption, sample_scene, Split, SplitMix64};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::error::{io_err, Result, TrainError};

pub const PAD_TOKEN: &str = "<pad>";
pub const EOS_TOKEN: &str = "</s>";
pub const UNK_TOKEN: &str = "<unk>";

/// Scenes per split sampled for the vocabulary; the grammar's words saturate well before
/// this (a test checks that twice as many scenes add no word).
pub const VOCABULARY_SCENES: u64 = 3000;
const CAPTIONS_PER_SCENE: usize = 4;

/// Splits like the `Whitespace` pre-tokenizer (`\w+|[^\w\s]+`) after lower-casing.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_is_word = false;
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_whitespace() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        let is_word = ch.is_alphanumeric() || ch == '_';
        if !current.is_empty() && is_word != current_is_word {
            out.push(std::mem::take(&mut current));
        }
        current_is_word = is_word;
        current.push(ch);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The captions of `scenes` scenes of each split, `CAPTIONS_PER_SCENE` paraphrases each,
/// in a fixed order.
pub fn grammar_captions(scenes: u64) -> impl Iterator<Item = String> {
    [Split::Train, Split::HeldOut]
        .into_iter()
        .flat_map(move |split| {
            (0..scenes).flat_map(move |seed| {
                let spec = sample_scene(seed, split);
                let mut rng = SplitMix64::new(seed ^ 0x7ABE_11ED);
                (0..CAPTIONS_PER_SCENE)
                    .map(|_| caption(&spec, &mut rng))
                    .collect::<Vec<_>>()
            })
        })
}

/// Every word of the captions of `scenes` scenes of each split (held-out scenes use the
/// same words in other combinations, so the model can read held-out prompts).
pub fn caption_vocabulary(scenes: u64) -> BTreeSet<String> {
    grammar_captions(scenes)
        .flat_map(|c| split_words(&c))
        .collect()
}

/// The tokenizer.json document for a vocabulary.
pub fn tokenizer_json(words: &BTreeSet<String>) -> Value {
    let specials = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN];
    let mut vocab = serde_json::Map::new();
    for (id, token) in specials.iter().enumerate() {
        vocab.insert((*token).to_string(), json!(id));
    }
    for word in words {
        if !vocab.contains_key(word) {
            let id = vocab.len();
            vocab.insert(word.clone(), json!(id));
        }
    }
    let added: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(id, token)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let eos = |seq: &str| {
        vec![
            json!({"Sequence": {"id": seq, "type_id": 0}}),
            json!({"SpecialToken": {"id": EOS_TOKEN, "type_id": 0}}),
        ]
    };
    let mut pair = eos("A");
    pair.extend(eos("B"));
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": eos("A"),
            "pair": pair,
            "special_tokens": {EOS_TOKEN: {"id": EOS_TOKEN, "ids": [1], "tokens": [EOS_TOKEN]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK_TOKEN}
    })
}

/// `tokenizer/tokenizer_config.json`, as transformers writes one for T5.
pub fn tokenizer_config_json(max_len: usize) -> Value {
    json!({
        "backend": "tokenizers",
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "extra_ids": 0,
        "model_max_length": max_len,
        "tokenizer_class": "T5Tokenizer"
    })
}

/// Token ids and mask of a batch of captions, padded to the longest.
pub struct TokenBatch {
    /// (B, L) u32
    pub input_ids: Tensor,
    /// (B, L) u32, 1 for real tokens
    pub attention_mask: Tensor,
}

pub struct CaptionTokenizer {
    tokenizer: Tokenizer,
    json: Value,
}

impl CaptionTokenizer {
    /// The bundled tokenizer, built from the caption grammar.
    pub fn from_grammar() -> Result<Self> {
        Self::from_json(tokenizer_json(&caption_vocabulary(VOCABULARY_SCENES)))
    }

    pub fn from_json(json: Value) -> Result<Self> {
        let tokenizer = Tokenizer::from_str(&json.to_string())
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        Ok(Self { tokenizer, json })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| TrainError::Invalid {
            path: path.to_path_buf(),
            what: "tokenizer.json",
            message: e.to_string(),
        })?;
        Self::from_json(json)
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn unk_id(&self) -> u32 {
        2
    }

    /// Ids of one text, `</s>` included.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids and mask of a batch, each padded to its longest text. A text of more than
    /// `max_len` tokens keeps its first `max_len − 1` and `</s>`, as the pipeline's
    /// tokenizer truncates (the post-processor's `</s>` is added after truncation).
    pub fn encode_batch(
        &self,
        texts: &[String],
        max_len: usize,
        device: &Device,
    ) -> Result<TokenBatch> {
        if max_len == 0 {
            return Err(TrainError::Options(
                "the text length must be at least 1".into(),
            ));
        }
        let rows = texts
            .iter()
            .map(|t| {
                let mut ids = self.ids(t)?;
                if ids.len() > max_len {
                    let eos = ids[ids.len() - 1];
                    ids.truncate(max_len - 1);
                    ids.push(eos);
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in &rows {
            for i in 0..len {
                ids.push(row.get(i).copied().unwrap_or(0));
                mask.push(u32::from(i < row.len()));
            }
        }
        Ok(TokenBatch {
            input_ids: Tensor::from_vec(ids, (rows.len(), len), device)?,
            attention_mask: Tensor::from_vec(mask, (rows.len(), len), device)?,
        })
    }
}
