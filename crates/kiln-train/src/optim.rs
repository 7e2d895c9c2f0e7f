//! AdamW with linear warm-up and global gradient-norm clipping. Written here rather than
//! using `candle_nn::AdamW` because a resumable run must save and restore the moment
//! estimates, which candle's optimizer keeps private.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not to norms, biases, tables).
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    /// Learning-rate factors for variables whose name contains a pattern (the first match
    /// counts; others get 1). Adam moves every weight by about the learning rate a step
    /// whatever its scale, so small paths that start near zero (a zero-initialised
    /// embedder's output layer) or tables of scale 1 change slowly at the rate that suits
    /// the transformer's matrices.
    #[serde(default)]
    pub lr_scales: Vec<LrScale>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrScale {
    /// Matched against `prefix.name` (e.g. `transformer.condition_embedder.camera_embedder`).
    pub contains: String,
    pub factor: f64,
}

impl AdamWConfig {
    pub fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 20,
            max_grad_norm: 1.0,
            lr_scales: Vec::new(),
        }
    }

    fn lr_factor(&self, name: &str) -> f64 {
        self.lr_scales
            .iter()
            .find(|s| name.contains(&s.contains))
            .map_or(1.0, |s| s.factor)
    }
}

struct Slot {
    name: String,
    /// This variable's factor on the learning rate (`AdamWConfig::lr_scales`).
    lr_factor: f64,
    var: Var,
    first_moment: Tensor,
    second_moment: Tensor,
}

pub struct AdamW {
    slots: Vec<Slot>,
    device: candle_core::Device,
    /// Updates applied so far.
    step: u64,
    config: AdamWConfig,
}

/// What one update did.
#[derive(Debug, Clone, Copy)]
pub struct UpdateReport {
    pub lr: f64,
    pub grad_norm: f64,
}

impl AdamW {
    /// Optimises every variable of the maps; names are `prefix.name`, in sorted order.
    pub fn new(maps: &[(&str, &VarMap)], config: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::new();
        let mut device = candle_core::Device::Cpu;
        for (prefix, map) in maps {
            let data = map.data().lock().expect("var map lock poisoned");
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for name in names {
                let var = data[name].clone();
                device = var.device().clone();
                let zeros = var.as_tensor().zeros_like()?;
                let name = format!("{prefix}.{name}");
                slots.push(Slot {
                    lr_factor: config.lr_factor(&name),
                    name,
                    var,
                    first_moment: zeros.clone(),
                    second_moment: zeros,
                });
            }
        }
        Ok(Self {
            slots,
            device,
            step: 0,
            config,
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn update(&mut self, grads: &GradStore) -> Result<UpdateReport> {
        let c = &self.config;
        let mut sum_sq = 0f64;
        for slot in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                sum_sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let grad_norm = sum_sq.sqrt();
        let clip = if grad_norm > c.max_grad_norm {
            c.max_grad_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as f64;
        let lr = c.lr * (t / c.warmup_steps.max(1) as f64).min(1.0);
        let bias1 = 1.0 - c.beta1.powf(t);
        let bias2 = 1.0 - c.beta2.powf(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = (g * clip)?;
            slot.first_moment = ((&slot.first_moment * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            slot.second_moment =
                ((&slot.second_moment * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&slot.first_moment / bias1)?;
            let v_hat = (&slot.second_moment / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let theta = slot.var.as_tensor();
            let slot_lr = lr * slot.lr_factor;
            let decayed = if theta.rank() >= 2 {
                (theta * (1.0 - slot_lr * c.weight_decay))?
            } else {
                theta.clone()
            };
            slot.var.set(&(decayed - (update * slot_lr)?)?)?;
        }
        Ok(UpdateReport { lr, grad_norm })
    }

    /// Moments and step count as safetensors (`m.NAME`, `v.NAME`, `step`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for slot in &self.slots {
            tensors.insert(format!("m.{}", slot.name), slot.first_moment.clone());
            tensors.insert(format!("v.{}", slot.name), slot.second_moment.clone());
        }
        // u32 halves are exact; safetensors has no u64 in candle's set.
        let step = [(self.step >> 32) as u32, self.step as u32];
        tensors.insert("step".into(), Tensor::new(&step, &self.device)?);
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)?;
        let get = |key: &str| {
            tensors
                .get(key)
                .cloned()
                .ok_or_else(|| crate::TrainError::Invalid {
                    path: path.to_path_buf(),
                    what: "optimizer state",
                    message: format!("{key} missing; the checkpoint is from another model"),
                })
        };
        for slot in &mut self.slots {
            slot.first_moment = get(&format!("m.{}", slot.name))?;
            slot.second_moment = get(&format!("v.{}", slot.name))?;
        }
        let step: Vec<u32> = get("step")?.to_vec1()?;
        self.step = (u64::from(step[0]) << 32) | u64::from(step[1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn lr_scales_multiply_the_step_of_matching_variables() {
        let device = Device::Cpu;
        let maps: Vec<VarMap> = (0..2).map(|_| VarMap::new()).collect();
        for map in &maps {
            map.get((2,), "w", candle_nn::Init::Const(1.0), DType::F32, &device)
                .unwrap();
        }
        let mut config = AdamWConfig::with_lr(0.01);
        config.warmup_steps = 1;
        config.lr_scales = vec![LrScale {
            contains: "fast.".into(),
            factor: 3.0,
        }];
        let mut optimizer = AdamW::new(&[("fast", &maps[0]), ("slow", &maps[1])], config).unwrap();
        let vars: Vec<Var> = maps
            .iter()
            .map(|m| m.data().lock().unwrap()["w"].clone())
            .collect();
        let loss = (vars[0].as_tensor().sum_all().unwrap()
            + vars[1].as_tensor().sum_all().unwrap())
        .unwrap();
        optimizer.update(&loss.backward().unwrap()).unwrap();
        let moved = |v: &Var| 1.0 - v.as_tensor().to_vec1::<f32>().unwrap()[0];
        // Adam's first step is lr · sign(g) (rank-1 variables are not decayed).
        assert!((moved(&vars[1]) - 0.01).abs() < 1e-6, "{}", moved(&vars[1]));
        assert!((moved(&vars[0]) - 0.03).abs() < 1e-6, "{}", moved(&vars[0]));
    }
}
