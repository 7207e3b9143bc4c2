//! robustd: the worst-case loss of a model under bounded input perturbations, served over HTTP.
//!
//! The server (`api`, `engine`) never runs user models itself: worker processes (`worker`) load
//! them with libtorch and run the math in `attack`.

pub mod api;
pub mod attack;
pub mod ci;
pub mod config;
pub mod dataset;
pub mod engine;
pub mod evaluation;
pub mod fuzz;
pub mod jobs;
pub mod model;
pub mod report;
pub mod store;
pub mod tensor;
pub mod web;
pub mod worker;
