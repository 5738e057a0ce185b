//! outboard.clap: the CLAP plugin. One instance is one scripted track.

pub mod state;
