//! ferrio: a Kubernetes CRI v1 runtime in one binary. See ARCHITECTURE.md for the map.
//!
//! Layers (arrows point to what a layer may use):
//! `cli` → `server` → `cri` (proto ⇄ domain) → `image` … → `state`, `sys`.
//! Only `cri` sees tonic and prost types; only `sys` may hold `unsafe`.

pub mod apparmor;
pub mod cdi;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod cri;
pub mod engine;
pub mod error;
pub mod image;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod network;
pub mod nri;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod state;
pub mod stats;
pub mod streaming;
pub mod sys;
pub mod telemetry;
