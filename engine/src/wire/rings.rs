//! The ring map: which ring of a worker's region carries what, and how
//! large each ring is.
//!
//! | ring | from → to | carries | its consumer sleeps on |
//! | --- | --- | --- | --- |
//! | [`REQUEST_RING`] (0) | host → worker | control requests ([`super::control::Request`]) | the worker's doorbell |
//! | [`REPLY_RING`] (1) | worker → host | control replies ([`super::control::Reply`]) | its own |
//! | [`slot_ring_to_script`]`(s)` (2 + 2s) | host → worker | track slot `s`'s blocks ([`super::block`]) | the worker's doorbell |
//! | [`slot_ring_from_script`]`(s)` (3 + 2s) | worker → host | slot `s`'s results and events | its own |
//!
//! The worker sleeps on one doorbell for every ring it reads; each ring the
//! host reads has its own. The host builds a region with [`region_rings`];
//! the worker checks one it attached with [`slots_of`].

use crate::shm::region::{Region, Wake};
use crate::shm::ring::RingShape;

use super::block::{self, MAX_EVENTS_PER_REPLY, ProcessLayout};

/// Ring 0 of a worker's region carries host → worker control messages.
pub const REQUEST_RING: usize = 0;
/// Ring 1 carries worker → host control messages.
pub const REPLY_RING: usize = 1;
/// Shape of both control rings.
pub const CONTROL_RING: RingShape = RingShape { capacity: 32, payload: 4096 - 8 };

/// Ring carrying blocks of track slot `slot` to the worker.
pub fn slot_ring_to_script(slot: usize) -> usize {
    2 + 2 * slot
}

/// Ring carrying results and events of track slot `slot` back.
pub fn slot_ring_from_script(slot: usize) -> usize {
    3 + 2 * slot
}

/// The shapes of one track slot's two rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRings {
    /// Carries blocks to the script.
    pub to_script: RingShape,
    /// Carries results and events back.
    pub from_script: RingShape,
}

impl SlotRings {
    /// The rings of a track whose blocks are `channels` × `frames` samples,
    /// `latency_blocks` of them in flight: room for a few blocks beyond the
    /// pipeline each way (a result and an events message per block back),
    /// each slot as large as the largest message.
    pub fn for_track(channels: usize, frames: usize, latency_blocks: usize) -> SlotRings {
        let samples = channels * frames;
        let depth = latency_blocks + 6;
        SlotRings {
            to_script: RingShape { capacity: depth, payload: ProcessLayout::max_len(samples) },
            from_script: RingShape {
                capacity: 2 * depth,
                payload: block::result_len(samples).max(block::events_len(MAX_EVENTS_PER_REPLY)),
            },
        }
    }

    /// Whether every message of a track with rings `track` fits these rings.
    pub fn hold(&self, track: SlotRings) -> bool {
        track.to_script.payload <= self.to_script.payload && track.from_script.payload <= self.from_script.payload
    }
}

/// The rings of a worker region with a track slot of each of the shapes
/// `slots` (none for a job worker), in the order of the ring map, each with
/// the doorbell its consumer sleeps on.
pub fn region_rings(slots: impl IntoIterator<Item = SlotRings>) -> Vec<(RingShape, Wake)> {
    let mut rings = vec![(CONTROL_RING, Wake::Worker), (CONTROL_RING, Wake::Own)];
    for slot in slots {
        rings.push((slot.to_script, Wake::Worker));
        rings.push((slot.from_script, Wake::Own));
    }
    rings
}

/// The number of track slots of an attached region, if it is laid out as
/// [`region_rings`] lays them out (the control rings first, then a pair
/// per slot); else why not.
pub fn slots_of(region: &Region) -> Result<usize, String> {
    let count = region.ring_count();
    let control = [REQUEST_RING, REPLY_RING].iter().all(|&r| region.ring_shape(r) == Some(CONTROL_RING));
    if count < 2 || count % 2 != 0 || !control {
        return Err("the region does not have the control rings this build expects".into());
    }
    Ok((count - 2) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_laid_out_by_the_map_is_read_back_by_it() {
        let shapes = SlotRings::for_track(2, 64, 2);
        for slots in [0, 1, 3] {
            let region = Region::create_with(&region_rings(std::iter::repeat_n(shapes, slots)), 1).unwrap();
            assert_eq!(slots_of(&region), Ok(slots));
            for s in 0..slots {
                assert_eq!(region.ring_shape(slot_ring_to_script(s)), Some(shapes.to_script));
                assert_eq!(region.ring_shape(slot_ring_from_script(s)), Some(shapes.from_script));
            }
        }
        let odd = Region::create(&[CONTROL_RING, CONTROL_RING, shapes.to_script]).unwrap();
        assert!(slots_of(&odd).is_err());
        let no_control = Region::create(&[shapes.to_script, shapes.from_script]).unwrap();
        assert!(slots_of(&no_control).is_err());
    }

    #[test]
    fn a_track_fits_rings_made_for_a_larger_one() {
        let large = SlotRings::for_track(2, 64, 64);
        assert!(large.hold(SlotRings::for_track(2, 64, 2)));
        assert!(large.hold(SlotRings::for_track(1, 32, 2)));
        assert!(!large.hold(SlotRings::for_track(8, 64, 2)));
    }
}
