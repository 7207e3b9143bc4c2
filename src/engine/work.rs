//! A unit of work as callers hand it to the pool, and how several merge into one batch and split
//! back apart.

use crate::attack::{AttackPlan, SampleResult};
use crate::tensor::{HostTensor, Values};
use crate::worker::protocol::{ModelRef, Request};

/// What to compute.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Load the model into a worker's cache.
    Load,
    Infer,
    Attack(AttackPlan),
}

/// The tensors of one request; all share the batch dimension.
#[derive(Debug, Clone)]
pub struct WorkInputs {
    pub x: HostTensor,
    /// Class indices (INT64) or float targets; attacks only.
    pub labels: Option<HostTensor>,
    /// Target classes for targeted attacks.
    pub targets: Option<HostTensor>,
    /// Each sample's index in its data set (keys its random streams).
    pub sample_ids: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Work {
    pub model: ModelRef,
    pub operation: Operation,
    pub inputs: WorkInputs,
}

/// What comes back for one request.
#[derive(Debug, Clone)]
pub enum WorkResult {
    Loaded,
    Output(HostTensor),
    Attacked {
        samples: Vec<SampleResult>,
        adversarial: HostTensor,
    },
}

impl Work {
    pub fn samples(&self) -> usize {
        self.inputs.x.shape.first().copied().unwrap_or(0).max(0) as usize
    }

    /// Requests batch together only when this key is equal: same model file, same operation and
    /// settings, same kinds of tensors.
    pub fn batch_key(&self) -> String {
        let operation = match &self.operation {
            Operation::Load => "load".to_owned(),
            Operation::Infer => "infer".to_owned(),
            Operation::Attack(plan) => serde_json::to_string(plan).expect("plans serialise"),
        };
        let kinds = |t: &Option<HostTensor>| match t {
            None => "-".to_owned(),
            Some(t) => format!("{}{:?}", t.datatype(), &t.shape[1..]),
        };
        format!(
            "{}|{operation}|{}|{}",
            self.model.sha256,
            kinds(&self.inputs.labels),
            kinds(&self.inputs.targets)
        )
    }
}

/// Concatenates the works of one batch (equal keys) into one worker request.
pub fn merge(works: &[&Work]) -> (Request, Vec<HostTensor>) {
    let first = works[0];
    let x = concat(works.iter().map(|w| &w.inputs.x));
    let mut tensors = vec![x];
    let request = match &first.operation {
        Operation::Load => {
            return (
                Request::Load {
                    model: first.model.clone(),
                },
                vec![],
            )
        }
        Operation::Infer => Request::Infer {
            model: first.model.clone(),
        },
        Operation::Attack(plan) => {
            let labels = works.iter().filter_map(|w| w.inputs.labels.as_ref());
            tensors.push(concat(labels));
            if first.inputs.targets.is_some() {
                tensors.push(concat(
                    works.iter().filter_map(|w| w.inputs.targets.as_ref()),
                ));
            }
            let sample_ids = works
                .iter()
                .flat_map(|w| w.inputs.sample_ids.iter().copied())
                .collect();
            Request::Attack {
                model: first.model.clone(),
                plan: plan.clone(),
                sample_ids,
            }
        }
    };
    (request, tensors)
}

/// Joins tensors of equal trailing shape along the first dimension.
pub fn concat<'a>(tensors: impl Iterator<Item = &'a HostTensor>) -> HostTensor {
    let mut shape: Option<Vec<i64>> = None;
    let mut values: Option<Values> = None;
    for t in tensors {
        match shape.as_mut() {
            None => shape = Some(t.shape.clone()),
            Some(s) => s[0] += t.shape[0],
        }
        match (&mut values, &t.values) {
            (None, v) => values = Some(v.clone()),
            (Some(Values::F32(a)), Values::F32(b)) => a.extend_from_slice(b),
            (Some(Values::I64(a)), Values::I64(b)) => a.extend_from_slice(b),
            _ => unreachable!("a batch key fixes the datatype"),
        }
    }
    HostTensor {
        shape: shape.unwrap_or_default(),
        values: values.unwrap_or(Values::F32(vec![])),
    }
}

/// Rows `start..start + n` of a tensor.
pub fn rows(t: &HostTensor, start: usize, n: usize) -> HostTensor {
    let width: usize = t.shape[1..].iter().product::<i64>() as usize;
    let mut shape = t.shape.clone();
    shape[0] = n as i64;
    let range = start * width..(start + n) * width;
    let values = match &t.values {
        Values::F32(v) => Values::F32(v[range].to_vec()),
        Values::I64(v) => Values::I64(v[range].to_vec()),
    };
    HostTensor { shape, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_then_rows_gives_each_part_back() {
        let a = HostTensor::f32(vec![1, 2], vec![1.0, 2.0]);
        let b = HostTensor::f32(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]);
        let joined = concat([&a, &b].into_iter());
        assert_eq!(joined.shape, [3, 2]);
        assert_eq!(rows(&joined, 0, 1), a);
        assert_eq!(rows(&joined, 1, 2), b);
    }
}
