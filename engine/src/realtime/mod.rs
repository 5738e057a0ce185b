//! The realtime side: tracks, the graph runner that drives them, the clock
//! every process agrees on and the native voice.

pub mod clock;
pub mod graph;
pub mod track;
pub mod voice;
