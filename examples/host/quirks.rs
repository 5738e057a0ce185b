//! Host quirks: what real hosts pass to a plugin's `process` that a careful
//! host would not (`outboard-host --host-quirks LIST`).
//!
//! DESIGN.md §9: the host is untrusted input. A plugin must check every
//! pointer, count, event header and block size it is given, skip what it
//! cannot read, and keep the audio exact. Each quirk below changes only how
//! the host hands the same audio and the same parameter values to the
//! plugin, so for a correct plugin the output with a quirk equals the output
//! without it, sample for sample — except `reset-while-offline`, which by
//! definition drops the audio in flight at every reset.
//!
//! Where the quirk is produced: the transport and event-order quirks and the
//! oversize call at the ABI level in [`crate::Processor::process`] (the host
//! builds the `clap_process` itself, so it can pass what clack-host's typed
//! API would not); the extra calls, the event past the end and the resets in
//! the run loop ([`crate::run()`]). Everything is preallocated at activation:
//! a quirk costs the audio thread nothing it does not cost without one.

use std::fmt;

/// One quirk. [`Quirk::ALL`] lists them; [`Quirk::name`] is the CLI name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quirk {
    /// A non-null `transport` whose event header and body are all zeros
    /// (type 0 — which is CLAP_EVENT_NOTE_ON in the core space —, size 0,
    /// no flags, tempo 0, time signature 0/0). Debian's Qtractor 0.9.31 does
    /// this on every call. A plugin must check the header (size at least
    /// `sizeof(clap_event_transport)`, type CLAP_EVENT_TRANSPORT, core space)
    /// before reading the body, and never divide by the tempo or the time
    /// signature unchecked.
    ZeroedTransport,
    /// A null `transport`: the CLAP header allows it (a free-running host,
    /// or no timeline at all), and hosts that only render audio do it. This
    /// host otherwise sends a playing 4/4 transport at 120 BPM.
    NoTransport,
    /// The input events in reverse time order (the parameter events the run
    /// queues: `--automate`, and the re-sent value of `events-past-end`).
    /// CLAP requires them sorted; a host that concatenates its sources
    /// (automation lanes, gestures from the editor, MIDI) without a final
    /// sort, or a wrapper between plugin formats, hands them over out of
    /// order. A plugin must not read past a segment or apply a value early:
    /// sorting them (stably, by time) keeps the audio exact.
    UnsortedEvents,
    /// One more parameter event per call, stamped at or after the end of the
    /// call (`frames_count`, `frames_count + 1`, `frames_count + 1000`,
    /// `u32::MAX` in turn), re-sending the parameter's current value (the
    /// automated parameter's last value, else the first writable parameter's
    /// value at activation), so the audio must not change. Hosts stamp late
    /// gestures and block-end automation points at `frames_count` (an
    /// off-by-one); a plugin must not index its buffers with the time.
    EventsPastEnd,
    /// An extra process call with `frames_count` 0 before every block (no
    /// events, the buffers valid). VST3 hosts flush parameters with
    /// zero-sample process calls and wrappers pass them on as CLAP calls; a
    /// plugin must return without touching its pipeline.
    ZeroFrames,
    /// Every 8th call covers 4 blocks at once: 4 × the maximum frame count
    /// announced at activation (the buffers are allocated that big). Hosts
    /// that switch buffer size (a device change, an offline bounce) without
    /// reactivating do this. A plugin must process the call in passes (or
    /// otherwise stay in bounds) and keep the audio exact.
    HugeBlock,
    /// With `--offline` only: `reset` on the audio thread before every 7th
    /// call. Hosts reset plugins at every seek and loop wrap, and during a
    /// bounce of a looped region that is often. The audio in flight (one
    /// latency's worth) is dropped at each reset: the output there is what
    /// the plugin gives for no input (silence for a plain effect).
    ResetWhileOffline,
}

impl Quirk {
    /// Every quirk, in the order of their bits and of the names lists.
    pub const ALL: [Quirk; 7] = [
        Quirk::ZeroedTransport,
        Quirk::NoTransport,
        Quirk::UnsortedEvents,
        Quirk::EventsPastEnd,
        Quirk::ZeroFrames,
        Quirk::HugeBlock,
        Quirk::ResetWhileOffline,
    ];

    /// The quirk's name on the command line (`--host-quirks`), e.g. `zeroed-transport`.
    pub fn name(self) -> &'static str {
        match self {
            Quirk::ZeroedTransport => "zeroed-transport",
            Quirk::NoTransport => "no-transport",
            Quirk::UnsortedEvents => "unsorted-events",
            Quirk::EventsPastEnd => "events-past-end",
            Quirk::ZeroFrames => "zero-frames",
            Quirk::HugeBlock => "huge-block",
            Quirk::ResetWhileOffline => "reset-while-offline",
        }
    }

    /// The quirk with this command-line name (exact, lower case), if any.
    pub fn from_name(name: &str) -> Option<Quirk> {
        Quirk::ALL.into_iter().find(|q| q.name() == name)
    }

    fn bit(self) -> u8 {
        1 << Quirk::ALL.iter().position(|q| *q == self).expect("listed")
    }
}

impl fmt::Display for Quirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `huge-block`: a huge call covers this many blocks ...
pub const HUGE_BLOCK_FACTOR: u32 = 4;
/// ... and every this-many-th call is a huge one (when enough frames remain).
pub const HUGE_BLOCK_EVERY: u64 = 8;
/// `reset-while-offline`: a reset before every this-many-th process call
/// (counting the calls that carry audio).
pub const RESET_EVERY: u64 = 7;
/// `events-past-end`: the re-sent event's time, past `frames_count` by
/// these amounts in turn (`u32::MAX` stands for "anything").
pub const PAST_END_OFFSETS: [u32; 4] = [0, 1, 1000, u32::MAX];

/// The time of `events-past-end`'s event in call number `call` of
/// `frames` frames: at or after `frames`, never wrapping.
pub fn past_end_time(call: u64, frames: u32) -> u32 {
    let offset = PAST_END_OFFSETS[(call % PAST_END_OFFSETS.len() as u64) as usize];
    frames.saturating_add(offset)
}

/// A set of quirks (`Copy`, so the audio threads hold their own).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks(u8);

impl Quirks {
    /// No quirk: the careful host.
    pub const NONE: Quirks = Quirks(0);

    /// Parses a comma-separated list of quirk names (spaces around names and
    /// empty items are ignored). An unknown name is refused with the list of
    /// valid ones.
    pub fn parse(list: &str) -> Result<Quirks, String> {
        let mut quirks = Quirks::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let quirk = Quirk::from_name(name)
                .ok_or_else(|| format!("unknown host quirk {name:?}; the quirks are: {}", Quirks::valid_names()))?;
            quirks.insert(quirk);
        }
        Ok(quirks)
    }

    /// Every quirk's name, comma-separated.
    pub fn valid_names() -> String {
        Quirk::ALL.map(Quirk::name).join(", ")
    }

    /// Whether `quirk` is in the set.
    pub fn contains(self, quirk: Quirk) -> bool {
        self.0 & quirk.bit() != 0
    }

    /// Adds `quirk` to the set.
    pub fn insert(&mut self, quirk: Quirk) {
        self.0 |= quirk.bit();
    }

    /// The set with `quirk` added.
    pub fn with(mut self, quirk: Quirk) -> Quirks {
        self.insert(quirk);
        self
    }

    /// Whether the set has no quirk.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The quirks in the set, in [`Quirk::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Quirk> {
        Quirk::ALL.into_iter().filter(move |q| self.contains(*q))
    }

    /// The names, comma-separated, in [`Quirk::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Quirk::name).collect()
    }
}

impl fmt::Debug for Quirks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Quirk::name)).finish()
    }
}

impl std::str::FromStr for Quirks {
    type Err = String;

    fn from_str(s: &str) -> Result<Quirks, String> {
        Quirks::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for q in Quirk::ALL {
            assert_eq!(Quirk::from_name(q.name()), Some(q));
            assert!(Quirks::NONE.with(q).contains(q));
        }
        let all = Quirks::parse(&Quirks::valid_names().replace(' ', "")).unwrap();
        assert_eq!(all.iter().count(), Quirk::ALL.len());
        let q = Quirks::parse(" zero-frames,,huge-block ").unwrap();
        assert_eq!(q.names(), ["zero-frames", "huge-block"]);
        assert!(!q.contains(Quirk::NoTransport));
        assert!(Quirks::parse("").unwrap().is_empty());
        let err = Quirks::parse("zero-frames,sideways").unwrap_err();
        assert!(err.contains("\"sideways\""), "{err}");
        for q in Quirk::ALL {
            assert!(err.contains(q.name()), "lists {q}: {err}");
        }
    }

    #[test]
    fn past_end_times_are_never_inside_the_call() {
        for call in 0..8 {
            for frames in [0u32, 1, 64, u32::MAX - 3] {
                assert!(past_end_time(call, frames) >= frames);
            }
        }
        assert_eq!(past_end_time(0, 64), 64);
        assert_eq!(past_end_time(3, 64), u32::MAX);
    }
}
