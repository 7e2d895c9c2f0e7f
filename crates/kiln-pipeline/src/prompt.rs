//! Prompt cleaning and tokenisation, as the reference pipeline does it before UMT5.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::PipelineError;

/// The reference's `prompt_clean` (without ftfy): HTML entities unescaped twice, runs of
/// whitespace collapsed to one space, ends trimmed.
pub fn clean_prompt(text: &str) -> String {
    let once = htmlize::unescape(text);
    let twice = htmlize::unescape(once.as_ref());
    // Python's `\s` is Unicode whitespace plus the separators U+001C..U+001F.
    twice
        .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A tokenizer.json set up to produce exactly `max_len` ids per prompt.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_len: usize,
}

/// Token ids and attention mask, each (1, max_len).
pub struct TokenizedPrompt {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub len: usize,
}

impl PromptTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, PipelineError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| PipelineError::Load {
            message: format!(
                "{}: not a usable tokenizer.json ({e}); use the tokenizer/ folder of the checkpoint",
                path.display()
            ),
        })?;
        let pad_id = tokenizer.token_to_id("<pad>").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            pad_id,
            pad_token: "<pad>".into(),
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| PipelineError::Load {
                message: format!("{}: cannot set truncation ({e})", path.display()),
            })?;
        Ok(Self { tokenizer, max_len })
    }

    pub fn encode(&self, prompt: &str, device: &Device) -> Result<TokenizedPrompt, PipelineError> {
        let cleaned = clean_prompt(prompt);
        let enc = self
            .tokenizer
            .encode(cleaned.as_str(), true)
            .map_err(|e| PipelineError::Input(format!("cannot tokenize the prompt ({e})")))?;
        let ids: Vec<u32> = enc.get_ids().to_vec();
        let mask: Vec<u32> = enc.get_attention_mask().to_vec();
        if ids.len() != self.max_len {
            return Err(PipelineError::Input(format!(
                "tokenizer produced {} ids, expected {}",
                ids.len(),
                self.max_len
            )));
        }
        let len = mask.iter().filter(|&&m| m > 0).count();
        Ok(TokenizedPrompt {
            input_ids: Tensor::from_vec(ids, (1, self.max_len), device)?,
            attention_mask: Tensor::from_vec(mask, (1, self.max_len), device)?,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::clean_prompt;

    #[test]
    fn cleaning_follows_the_reference() {
        assert_eq!(
            clean_prompt("  a  red\tcircle\n\nmoves "),
            "a red circle moves"
        );
        assert_eq!(clean_prompt("cats &amp; dogs"), "cats & dogs");
        // Unescaped twice, as the reference does.
        assert_eq!(clean_prompt("cats &amp;amp; dogs"), "cats & dogs");
        assert_eq!(clean_prompt("&lt;b&gt;"), "<b>");
        assert_eq!(clean_prompt("a&nbsp;b\u{1f}c"), "a b c");
    }
}
