//! Weight layouts of the Wan 2.1 VAE besides diffusers': the original release
//! (`Wan2.1_VAE.pth`, and the repackaged single file `wan_2.1_vae.safetensors`), whose keys
//! follow the original module tree (`encoder.conv1`, `encoder.downsamples.N.residual.M`,
//! `encoder.middle.N`, `encoder.head.N`, `conv1`/`conv2`, `decoder.upsamples.N`, ...).
//!
//! The map goes from the diffusers key the model asks for to the stored key, following
//! diffusers' `convert_wan_vae_to_diffusers` in reverse. The original decoder numbers its
//! layers in one flat list (`num_res_blocks + 1` residual blocks and a resample per level),
//! so the stride of that list is read from the stored keys rather than assumed.

use crate::KeyMap;

const ORIGINAL_MARKERS: [&str; 2] = ["decoder.conv1.weight", "encoder.conv1.weight"];
const DIFFUSERS_MARKERS: [&str; 2] = ["decoder.conv_in.weight", "encoder.conv_in.weight"];

/// The key map for a VAE file with these stored keys; `None` when they are already in the
/// diffusers layout (or are not a recognisable Wan VAE, which loading then reports by key).
/// A common prefix in front of either layout (e.g. `vae.`) is handled too.
pub fn key_map_for(stored_keys: &[String]) -> Option<KeyMap> {
    if let Some(prefix) = find_prefix(stored_keys, &ORIGINAL_MARKERS) {
        let per_level = original_decoder_level_len(stored_keys, &prefix);
        return Some(Box::new(move |key: &str| {
            format!("{prefix}{}", original_key(key, per_level))
        }));
    }
    match find_prefix(stored_keys, &DIFFUSERS_MARKERS) {
        Some(prefix) if !prefix.is_empty() => {
            Some(Box::new(move |key: &str| format!("{prefix}{key}")))
        }
        _ => None,
    }
}

/// The text in front of the first marker found, e.g. `""` or `"vae."`.
fn find_prefix(stored_keys: &[String], markers: &[&str]) -> Option<String> {
    markers.iter().find_map(|marker| {
        stored_keys.iter().find_map(|k| {
            let prefix = k.strip_suffix(marker)?;
            (prefix.is_empty() || prefix.ends_with('.')).then(|| prefix.to_string())
        })
    })
}

/// Layers per decoder level in the original flat `decoder.upsamples` list:
/// `num_res_blocks + 1` residual blocks and one resample. The first level's resample sits at
/// index `num_res_blocks + 1` of the decoder (the encoder's first resample at
/// `num_res_blocks`). With a single level nothing is resampled and the stride is unused.
fn original_decoder_level_len(stored_keys: &[String], prefix: &str) -> usize {
    let first_resample = |list: &str| {
        stored_keys
            .iter()
            .filter_map(|k| {
                let rest = k.strip_prefix(prefix)?.strip_prefix(list)?;
                let (index, tail) = rest.split_once('.')?;
                tail.starts_with("resample.")
                    .then(|| index.parse::<usize>().ok())
                    .flatten()
            })
            .min()
    };
    if let Some(i) = first_resample("decoder.upsamples.") {
        i + 1
    } else if let Some(i) = first_resample("encoder.downsamples.") {
        i + 2
    } else {
        usize::MAX / 4
    }
}

/// The original key for one diffusers key.
fn original_key(key: &str, per_level: usize) -> String {
    if let Some(rest) = key.strip_prefix("quant_conv.") {
        return format!("conv1.{rest}");
    }
    if let Some(rest) = key.strip_prefix("post_quant_conv.") {
        return format!("conv2.{rest}");
    }
    let Some((half, rest)) = key
        .strip_prefix("encoder.")
        .map(|r| ("encoder", r))
        .or_else(|| key.strip_prefix("decoder.").map(|r| ("decoder", r)))
    else {
        return key.to_string();
    };
    let mapped = if let Some(r) = rest.strip_prefix("conv_in.") {
        format!("conv1.{r}")
    } else if let Some(r) = rest.strip_prefix("norm_out.") {
        format!("head.0.{r}")
    } else if let Some(r) = rest.strip_prefix("conv_out.") {
        format!("head.2.{r}")
    } else if let Some(r) = rest.strip_prefix("mid_block.resnets.") {
        // middle = [resnet, attention, resnet]
        match split_index(r) {
            Some((j, tail)) => format!("middle.{}.{}", 2 * j, residual_key(tail)),
            None => return key.to_string(),
        }
    } else if let Some(r) = rest.strip_prefix("mid_block.attentions.") {
        match split_index(r) {
            Some((a, tail)) => format!("middle.{}.{tail}", 2 * a + 1),
            None => return key.to_string(),
        }
    } else if let Some(r) = rest.strip_prefix("down_blocks.") {
        // Both layouts number the encoder's layers in one flat list.
        match split_index(r) {
            Some((n, tail)) => format!("downsamples.{n}.{}", residual_key(tail)),
            None => return key.to_string(),
        }
    } else if let Some(r) = rest.strip_prefix("up_blocks.") {
        let Some((level, tail)) = split_index(r) else {
            return key.to_string();
        };
        let base = level.saturating_mul(per_level);
        if let Some((j, tail)) = tail.strip_prefix("resnets.").and_then(split_index) {
            format!(
                "upsamples.{}.{}",
                base.saturating_add(j),
                residual_key(tail)
            )
        } else if let Some(tail) = tail.strip_prefix("upsamplers.0.") {
            let index = base.saturating_add(per_level - 1);
            format!("upsamples.{index}.{tail}")
        } else {
            return key.to_string();
        }
    } else {
        return key.to_string();
    };
    format!("{half}.{mapped}")
}

/// `"12.rest"` -> `(12, "rest")`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (index, tail) = s.split_once('.')?;
    Some((index.parse().ok()?, tail))
}

/// Residual block parameter names: the original keeps them in an `nn.Sequential`
/// (`residual.0` RMS norm, `.2` conv, `.3` RMS norm, `.6` conv) and names the shortcut
/// `shortcut`. Other names (resample, time_conv) are the same in both layouts.
fn residual_key(tail: &str) -> String {
    const NAMES: [(&str, &str); 5] = [
        ("norm1.", "residual.0."),
        ("conv1.", "residual.2."),
        ("norm2.", "residual.3."),
        ("conv2.", "residual.6."),
        ("conv_shortcut.", "shortcut."),
    ];
    for (diffusers, original) in NAMES {
        if let Some(param) = tail.strip_prefix(diffusers) {
            return format!("{original}{param}");
        }
    }
    tail.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original Wan 2.1 VAE keys for `num_res_blocks` = 2, dim_mult of length 4
    /// (decoder levels of 4 layers: 3 residual blocks and a resample).
    fn map(key: &str) -> String {
        let stored: Vec<String> = [
            "encoder.conv1.weight",
            "encoder.downsamples.2.resample.1.weight",
            "decoder.upsamples.3.resample.1.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match key_map_for(&stored) {
            Some(m) => m(key),
            None => panic!("original layout not detected"),
        }
    }

    #[test]
    fn maps_as_convert_wan_vae_to_diffusers() {
        let cases = [
            ("quant_conv.weight", "conv1.weight"),
            ("post_quant_conv.bias", "conv2.bias"),
            ("encoder.conv_in.weight", "encoder.conv1.weight"),
            ("decoder.conv_in.bias", "decoder.conv1.bias"),
            ("encoder.norm_out.gamma", "encoder.head.0.gamma"),
            ("decoder.conv_out.weight", "decoder.head.2.weight"),
            (
                "encoder.mid_block.resnets.0.norm1.gamma",
                "encoder.middle.0.residual.0.gamma",
            ),
            (
                "decoder.mid_block.resnets.1.conv2.weight",
                "decoder.middle.2.residual.6.weight",
            ),
            (
                "decoder.mid_block.attentions.0.to_qkv.bias",
                "decoder.middle.1.to_qkv.bias",
            ),
            (
                "encoder.mid_block.attentions.0.norm.gamma",
                "encoder.middle.1.norm.gamma",
            ),
            (
                "encoder.down_blocks.3.conv1.bias",
                "encoder.downsamples.3.residual.2.bias",
            ),
            (
                "encoder.down_blocks.3.norm2.gamma",
                "encoder.downsamples.3.residual.3.gamma",
            ),
            (
                "encoder.down_blocks.3.conv_shortcut.weight",
                "encoder.downsamples.3.shortcut.weight",
            ),
            (
                "encoder.down_blocks.5.time_conv.weight",
                "encoder.downsamples.5.time_conv.weight",
            ),
            (
                "encoder.down_blocks.2.resample.1.bias",
                "encoder.downsamples.2.resample.1.bias",
            ),
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.upsamples.2.residual.2.weight",
            ),
            (
                "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
                "decoder.upsamples.4.shortcut.weight",
            ),
            (
                "decoder.up_blocks.3.resnets.1.norm1.gamma",
                "decoder.upsamples.13.residual.0.gamma",
            ),
            (
                "decoder.up_blocks.0.upsamplers.0.resample.1.weight",
                "decoder.upsamples.3.resample.1.weight",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.time_conv.bias",
                "decoder.upsamples.11.time_conv.bias",
            ),
        ];
        for (diffusers, original) in cases {
            assert_eq!(map(diffusers), original, "{diffusers}");
        }
    }

    #[test]
    fn level_stride_follows_num_res_blocks() {
        // num_res_blocks = 1: decoder levels of 3 layers; found from the encoder alone too.
        for marker in [
            "decoder.upsamples.2.resample.1.weight",
            "encoder.downsamples.1.resample.1.weight",
        ] {
            let stored = vec!["decoder.conv1.weight".to_string(), marker.to_string()];
            let m = key_map_for(&stored).expect("original layout");
            assert_eq!(
                m("decoder.up_blocks.1.upsamplers.0.resample.1.weight"),
                "decoder.upsamples.5.resample.1.weight"
            );
            assert_eq!(
                m("decoder.up_blocks.2.resnets.1.conv2.bias"),
                "decoder.upsamples.7.residual.6.bias"
            );
        }
    }

    #[test]
    fn diffusers_layout_needs_no_map_and_prefixes_are_kept() {
        let plain = vec!["decoder.conv_in.weight".to_string()];
        assert!(key_map_for(&plain).is_none());
        let prefixed = vec!["vae.decoder.conv_in.weight".to_string()];
        let m = key_map_for(&prefixed).expect("prefix map");
        assert_eq!(m("quant_conv.weight"), "vae.quant_conv.weight");
        let original = vec![
            "vae.decoder.conv1.weight".to_string(),
            "vae.decoder.upsamples.3.resample.1.weight".to_string(),
        ];
        let m = key_map_for(&original).expect("original map");
        assert_eq!(m("quant_conv.weight"), "vae.conv1.weight");
        assert_eq!(
            m("decoder.up_blocks.1.upsamplers.0.resample.1.weight"),
            "vae.decoder.upsamples.7.resample.1.weight"
        );
    }
}
