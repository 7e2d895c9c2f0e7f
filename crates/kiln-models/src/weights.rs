//! Memory-mapped safetensors as a candle `VarBuilder`, with key renaming for the
//! single-file layouts and one-line errors that name the file, the key and the fix.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use crate::error::{LoadError, Result};

/// Maps a key as the model code asks for it (diffusers names) to the key stored in the file.
pub type KeyMap = Box<dyn Fn(&str) -> String + Send + Sync>;

/// Reads and parses a JSON config, naming the file on failure.
pub fn read_config<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| LoadError::Config {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// The safetensors files of one component folder: a sharded index
/// (`*.safetensors.index.json`) if present, else every `*.safetensors` file in it.
pub fn component_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut singles = Vec::new();
    let mut index = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors.index.json") {
            index = Some(entry.path());
        } else if name.ends_with(".safetensors") {
            singles.push(entry.path());
        }
    }
    if let Some(index) = index {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let idx: Index = read_config(&index, "safetensors index")?;
        let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.is_file() {
                return Err(LoadError::Invalid {
                    path: f.clone(),
                    message: format!(
                        "shard listed in {} is missing; download every shard of the checkpoint",
                        index.display()
                    ),
                });
            }
        }
        return Ok(files);
    }
    singles.sort();
    if singles.is_empty() {
        return Err(LoadError::Invalid {
            path: dir.to_path_buf(),
            message:
                "no .safetensors weights found; download the component's weights into this folder"
                    .into(),
        });
    }
    Ok(singles)
}

/// A set of memory-mapped safetensors files seen through a key map.
pub struct WeightSource {
    tensors: MmapedSafetensors,
    label: String,
    key_map: Option<KeyMap>,
    fix: String,
}

impl WeightSource {
    /// Maps `files`. `label` names them in errors; `fix` says what to do when a key is missing.
    pub fn open(
        files: &[PathBuf],
        key_map: Option<KeyMap>,
        fix: impl Into<String>,
    ) -> Result<Self> {
        for f in files {
            check_safetensors_file(f)?;
        }
        // SAFETY: the files are opened read-only; kiln never writes a checkpoint it has mapped.
        let tensors =
            unsafe { MmapedSafetensors::multi(files) }.map_err(|e| LoadError::Invalid {
                path: files.first().cloned().unwrap_or_default(),
                message: format!("cannot map safetensors ({e}); re-download the file"),
            })?;
        let label = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            tensors,
            label,
            key_map,
            fix: fix.into(),
        })
    }

    /// Sets the key map after opening, so the layout can be detected from `stored_keys`
    /// without mapping the files twice.
    pub fn with_key_map(mut self, key_map: Option<KeyMap>) -> Self {
        self.key_map = key_map;
        self
    }

    /// Every key stored in the files, as stored.
    pub fn stored_keys(&self) -> Vec<String> {
        self.tensors.tensors().into_iter().map(|(k, _)| k).collect()
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn stored_key(&self, name: &str) -> String {
        match &self.key_map {
            Some(map) => map(name),
            None => name.to_string(),
        }
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let key = self.stored_key(name);
        let view = self.tensors.get(&key).map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: missing tensor `{key}`{}; {}",
                self.label,
                expected
                    .map(|s| format!(" (expected shape {:?})", s.dims()))
                    .unwrap_or_default(),
                self.fix
            ))
        })?;
        let found: Vec<usize> = view.shape().to_vec();
        if let Some(s) = expected {
            if s.dims() != found.as_slice() {
                return Err(candle_core::Error::Msg(format!(
                    "{}: tensor `{key}` has shape {found:?}, expected {:?} from the config; use the config.json that matches these weights",
                    self.label,
                    s.dims()
                )));
            }
        }
        match DType::try_from(view.dtype()) {
            Ok(DType::F32 | DType::BF16 | DType::F16) => {}
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: tensor `{key}` is stored as {:?}, expected f32, bf16 or f16; convert the checkpoint to one of those",
                    self.label,
                    view.dtype()
                )))
            }
        }
        self.tensors.load(&key, dev)?.to_dtype(dtype)
    }
}

impl SimpleBackend for WeightSource {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.get(&self.stored_key(name)).is_ok()
    }
}

/// Checks the header and the data length before mapping, so a truncated download is
/// reported as such rather than as a parse error deep inside a load.
fn check_safetensors_file(path: &Path) -> Result<()> {
    let invalid = |message: String| LoadError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut n = [0u8; 8];
    if len < 8 || f.read_exact(&mut n).is_err() {
        return Err(invalid(format!(
            "file is {len} bytes, too short for a safetensors header; the download is truncated, fetch it again"
        )));
    }
    let header_len = u64::from_le_bytes(n);
    if header_len > 100_000_000 || 8 + header_len > len {
        return Err(invalid(format!(
            "safetensors header claims {header_len} bytes but the file has {len}; the file is truncated or not safetensors, fetch it again"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| {
        invalid(format!(
            "cannot read the safetensors header ({e}); fetch the file again"
        ))
    })?;
    let meta: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| {
            invalid(format!(
                "safetensors header is not valid JSON ({e}); the file is corrupt, fetch it again"
            ))
        })?;
    let mut end = 0u64;
    for (k, v) in &meta {
        if k == "__metadata__" {
            continue;
        }
        if let Some(off) = v.get("data_offsets").and_then(|o| o.as_array()) {
            if let Some(e) = off.get(1).and_then(|x| x.as_u64()) {
                end = end.max(e);
            }
        }
    }
    let need = 8 + header_len + end;
    if need > len {
        return Err(invalid(format!(
            "file is {len} bytes but its header needs {need}; the download is truncated, fetch it again"
        )));
    }
    Ok(())
}

/// Normal random weights N(0, `std`²) of whatever shape a model asks for: benchmarks and
/// memory measurements of real-sized models without their checkpoints. Counts the bytes it
/// hands out (clones share the count).
#[derive(Debug, Clone)]
pub struct RandomWeights {
    std: f32,
    given: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RandomWeights {
    pub fn new(std: f32) -> Self {
        Self {
            std,
            given: Default::default(),
        }
    }

    /// A `VarBuilder` over these random weights in `dtype`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Bytes of all weights handed out so far, by every clone.
    pub fn bytes_given(&self) -> usize {
        self.given.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        _: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = Tensor::randn(0f32, self.std, shape, device)?.to_dtype(dtype)?;
        self.given.fetch_add(
            t.elem_count() * dtype.size_in_bytes(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
