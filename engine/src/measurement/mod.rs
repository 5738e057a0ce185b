//! Measurement: latency histograms and job statistics tables.

pub mod histogram;
pub mod stats;
