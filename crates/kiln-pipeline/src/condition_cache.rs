//! Precomputed text-only conditions, shipped beside a model in the image-to-video input
//! form. The "nothing given" condition is the VAE encoding of a mid-grey clip, which depends
//! only on the clip's size and the VAE's weights; encoding it costs more than the whole
//! prompt encode at the bundled model's size, so the model folder can carry it. Entries are
//! trusted only when the file names the SHA-256 of the VAE weights actually loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

/// File name in the model folder.
pub const FILE_NAME: &str = "kiln_text_only_condition.safetensors";
const VAE_SHA_KEY: &str = "vae_sha256";

/// SHA-256 (hex) over the VAE weight files, in order.
pub(crate) fn vae_fingerprint(files: &[PathBuf]) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    for f in files {
        let mut file = std::fs::File::open(f)?;
        std::io::copy(&mut file, &mut hasher)?;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn key(width: usize, height: usize) -> String {
    format!("text_only/{width}x{height}")
}

/// Writes `conditions` ((width, height) → (1, 4 + z, F', h, w) f32) with the fingerprint.
pub(crate) fn write(
    path: &Path,
    fingerprint: &str,
    conditions: &[((usize, usize), Tensor)],
) -> candle_core::Result<()> {
    let tensors: HashMap<String, Tensor> = conditions
        .iter()
        .map(|((w, h), t)| (key(*w, *h), t.clone()))
        .collect();
    let metadata: HashMap<String, String> =
        [(VAE_SHA_KEY.to_string(), fingerprint.to_string())].into();
    let data: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let bytes = safetensors::serialize(data.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The cached conditions of `path` by (width, height), or nothing when the file is absent,
/// unreadable, or made for other VAE weights (then they are recomputed as usual).
pub(crate) fn read(
    path: &Path,
    fingerprint: &str,
    device: &Device,
) -> HashMap<(usize, usize), Tensor> {
    let mut out = HashMap::new();
    let Ok(bytes) = std::fs::read(path) else {
        return out;
    };
    let Ok((_, meta)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        tracing::warn!(path = %path.display(), "unreadable condition cache; ignoring it");
        return out;
    };
    let matches = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(VAE_SHA_KEY))
        .is_some_and(|s| s == fingerprint);
    if !matches {
        tracing::warn!(path = %path.display(), "condition cache made for other VAE weights; ignoring it");
        return out;
    }
    let Ok(tensors) = candle_core::safetensors::load_buffer(&bytes, device) else {
        return out;
    };
    for (name, t) in tensors {
        let Some(size) = name.strip_prefix("text_only/") else {
            continue;
        };
        if let Some((w, h)) = size.split_once('x') {
            if let (Ok(w), Ok(h)) = (w.parse(), h.parse()) {
                out.insert((w, h), t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model re-exported with other VAE weights (a decoder trained further) must ship a
    /// cache made for them, or every text-only request pays the VAE encode again.
    #[test]
    fn the_bundled_models_cache_matches_its_vae() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/kiln-bundled");
        let files = kiln_models::component_files(&model.join("vae")).unwrap();
        let fingerprint = vae_fingerprint(&files).unwrap();
        let entries = read(&model.join(FILE_NAME), &fingerprint, &Device::Cpu);
        let mut sizes: Vec<_> = entries.keys().copied().collect();
        sizes.sort();
        assert_eq!(sizes, [(64, 64), (64, 112), (112, 64)]);
    }
}
