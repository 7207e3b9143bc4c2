//! Labelled tensor sets: inputs `x` and labels `y`. Shipped ones are safetensors files in the
//! model folder's `datasets/`; uploaded ones are stored as `.npy` blobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::store::Store;
use crate::tensor::{element_count, read_npy, HostTensor, Values};

/// A data set in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: HostTensor,
    pub y: HostTensor,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.x.shape.first().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that x and y describe the same samples.
    pub fn new(x: HostTensor, y: HostTensor) -> Result<Self, String> {
        if x.as_f32().is_none() {
            return Err("x: inputs must be floating point".to_owned());
        }
        if x.shape.len() < 2 || x.shape[0] < 1 {
            return Err(format!(
                "x: shape must be [n, ...] with n >= 1, got {:?}",
                x.shape
            ));
        }
        if y.shape.first() != x.shape.first() {
            return Err(format!(
                "y: must have one row per sample of x ({}), got shape {:?}",
                x.shape[0], y.shape
            ));
        }
        if y.as_i64().is_some() && y.shape.len() != 1 {
            return Err(format!(
                "y: class labels must have shape [n], got {:?}",
                y.shape
            ));
        }
        Ok(Self { x, y })
    }

    /// Reads a safetensors file with tensors `x` and `y`.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let tensors = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let read = |name: &str| -> Result<HostTensor, String> {
            let view = tensors
                .tensor(name)
                .map_err(|_| format!("{name}: the file has no tensor named {name:?}"))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let count = element_count(&shape).ok_or_else(|| format!("{name}: bad shape"))?;
            let data = view.data();
            use safetensors::Dtype;
            let values = match view.dtype() {
                Dtype::F32 => Values::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::F64 => Values::F32(
                    data.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                ),
                Dtype::I64 => Values::I64(
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::I32 => Values::I64(
                    data.chunks_exact(4)
                        .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
                        .collect(),
                ),
                Dtype::U8 => Values::I64(data.iter().map(|&b| i64::from(b)).collect()),
                other => {
                    return Err(format!(
                        "{name}: dtype {other:?} is not supported (F32, F64, I64, I32, U8)"
                    ))
                }
            };
            let tensor = HostTensor { shape, values };
            if tensor.len() != count {
                return Err(format!("{name}: data does not match its shape"));
            }
            Ok(tensor)
        };
        Self::new(read("x")?, read("y")?)
    }

    /// Writes named tensors as one safetensors file.
    pub fn to_safetensors(tensors: &[(&str, &HostTensor)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = tensors
            .iter()
            .map(|(name, t)| {
                let dtype = if t.as_f32().is_some() {
                    safetensors::Dtype::F32
                } else {
                    safetensors::Dtype::I64
                };
                let shape = t.shape.iter().map(|&d| d as usize).collect();
                (name.to_string(), t.to_le_bytes(), dtype, shape)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(name, data, dtype, shape)| {
                let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                    .expect("shape and bytes agree");
                (name.clone(), view)
            })
            .collect();
        safetensors::tensor::serialize(views, None).expect("in-memory serialisation")
    }

    /// Samples `start..start + n`.
    pub fn slice(&self, start: usize, n: usize) -> Dataset {
        Dataset {
            x: crate::engine::rows(&self.x, start, n),
            y: crate::engine::rows(&self.y, start, n),
        }
    }
}

/// The shipped data sets: every `NAME.safetensors` in `folder`.
pub fn shipped(folder: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect()
}

/// Every data set the server knows: the shipped ones and the stored ones.
#[derive(Debug, Clone)]
pub struct Datasets {
    shipped: BTreeMap<String, PathBuf>,
    store: Store,
}

/// What a listing shows of a data set.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DatasetInfo {
    pub name: String,
    pub n: i64,
    pub x_shape: Vec<i64>,
    pub origin: &'static str,
}

impl Datasets {
    pub fn new(shipped_folder: &Path, store: Store) -> Self {
        Self {
            shipped: shipped(shipped_folder),
            store,
        }
    }

    pub fn is_shipped(&self, name: &str) -> bool {
        self.shipped.contains_key(name)
    }

    /// Loads a data set by name; a missing or corrupt blob is an error for it alone.
    pub async fn load(&self, name: &str) -> Result<Dataset, String> {
        if let Some(path) = self.shipped.get(name) {
            let bytes = std::fs::read(path).map_err(|e| format!("data set {name:?}: {e}"))?;
            return Dataset::from_safetensors(&bytes)
                .map_err(|e| format!("data set {name:?}: {e}"));
        }
        let record = match self.store.dataset(name).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(format!("data set {name:?} does not exist")),
            Err(e) => return Err(e.to_string()),
        };
        let read = |sha: &str| -> Result<HostTensor, String> {
            let bytes = self
                .store
                .blobs
                .get(sha)
                .map_err(|e| format!("data set {name:?}: {e}"))?;
            read_npy(&bytes).map_err(|e| format!("data set {name:?}: {e}"))
        };
        Dataset::new(read(&record.x_sha256)?, read(&record.y_sha256)?)
    }

    pub async fn list(&self) -> Result<Vec<DatasetInfo>, crate::store::StoreError> {
        let mut out: Vec<DatasetInfo> = Vec::new();
        for (name, path) in &self.shipped {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let Ok(data) = Dataset::from_safetensors(&bytes) else {
                continue;
            };
            out.push(DatasetInfo {
                name: name.clone(),
                n: data.len() as i64,
                x_shape: data.x.shape.clone(),
                origin: "shipped",
            });
        }
        for record in self.store.datasets().await? {
            out.push(DatasetInfo {
                name: record.name,
                n: record.n,
                x_shape: record.x_shape,
                origin: "uploaded",
            });
        }
        Ok(out)
    }
}
