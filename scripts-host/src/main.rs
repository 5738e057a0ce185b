//! `outboard-scripts-host`: one scripting worker process.
//!
//! Started by the engine (never by hand, never by a realtime thread) as
//! `outboard-scripts-host --worker INDEX --generation G --parent-pid PID
//! [--memory-limit BYTES] [--python-env DIR]` (`outboard_engine::wire::launch`),
//! with its region (a memfd) as standard input. It serves job requests until
//! told to shut down, until its host dies, or until its rings fault.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outboard_engine::realtime::clock::monotonic_ns;
use outboard_engine::shm::region::{Region, WorkerStatus};
use outboard_engine::shm::ring::{Consumer, PopError, Producer, PushError};
use outboard_engine::wire::block::{
    self, BlockHeader, BlockKind, CONTEXT_BYTES, EVENT_BYTES, Event, EventAction, HEADER_BYTES, MAX_BLOCK_EVENTS,
    MAX_EVENTS_PER_REPLY, MAX_PARAMS, ResultStatus, Transport,
};
use outboard_engine::wire::control::{JobError, JobReply, Json, Reassembler, Reply, Request, ScriptSpec};
use outboard_engine::wire::launch::{WorkerArgs, parent_gone, settle_worker};
use outboard_engine::wire::rings::{
    CONTROL_RING, REPLY_RING, REQUEST_RING, slot_ring_from_script, slot_ring_to_script, slots_of,
};
use outboard_scripts_host::{BlockIn, BlockOutcome, JobRuntime, RealtimeRuntime};

/// How long the worker sleeps on an empty ring before beating and checking its parent.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How long an idle worker polls its rings before sleeping.
const SPIN: Duration = Duration::from_micros(50);
/// How long before the next block is due a worker starts polling for it (and
/// how long after it keeps polling): covers timer and wake-up jitter.
const WAKE_EARLY: Duration = Duration::from_micros(150);
/// How long the worker keeps beating while its interpreter starts (see
/// `beating_while`): far beyond any healthy start, so a wedged one is still caught.
const STARTUP_BEAT_LIMIT: Duration = Duration::from_secs(30);
/// How long the worker keeps beating while it loads a script (its imports
/// and `setup`): importing scipy alone took 0.7-1.1 s here on a quiet
/// machine and over a second under load, past the supervisor's heartbeat
/// timeout, so the worker was killed as hung and restarted, again and
/// again. Beyond this limit a load is taken for a hang (a `setup` that never
/// returns) and the heartbeat timeout catches it.
const SCRIPT_LOAD_BEAT_LIMIT: Duration = Duration::from_secs(20);
/// How many of a track's blocks that are already too late to be played a
/// worker that fell behind still runs through the script, beyond the L
/// blocks that are still on time (which it always runs): when more than
/// L + CATCH_UP_BLOCKS blocks are waiting, the oldest beyond that are skipped
/// unseen (the script learns of the gap from `ctx.skipped`).
///
/// Running late blocks keeps a script's state honest (a phase, a counter
/// sees every block), but each costs as much as an on-time one and its
/// audio is thrown away, while the blocks behind it wait: after a long stall
/// (a page fault storm, a stop-the-world GC, a machine suspended) replaying
/// all of it would keep the track late for as long again. 16 blocks is
/// 21 ms at 64 frames and 48 kHz: a hiccup is replayed whole, a stall is
/// not. (With the engine's ring shapes, L + 6 blocks, a full ring already
/// stops the track sending before this bound is reached; the bound holds
/// whatever rings the worker is given.)
const CATCH_UP_BLOCKS: usize = 16;
/// Events of blocks whose result was not sent (too late to be played) are
/// held and sent with the next result, packed together: sent block by block,
/// a catch-up of ticking blocks would fill the ring back to the track with
/// one message each and crowd out the results that can still be played. At
/// most this many are held (the newest); the track applies them at once, late.
const HELD_EVENTS: usize = 4 * MAX_EVENTS_PER_REPLY;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--version") {
        println!("outboard-scripts-host {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match WorkerArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("outboard-scripts-host: {e}");
            return ExitCode::from(2);
        }
    };
    let tag = format!("[outboard worker {} pid {}]", args.worker, std::process::id());
    if let Err(e) = settle_worker(&args) {
        eprintln!("{tag} {e}");
        return ExitCode::from(3);
    }
    let mut region = match Region::attach_stdin() {
        Ok(region) => region,
        Err(e) => {
            eprintln!("{tag} {e}");
            return ExitCode::from(3);
        }
    };
    let slot_count = match slots_of(&region) {
        Ok(slots) => slots,
        Err(e) => {
            eprintln!("{tag} {e}");
            return ExitCode::from(3);
        }
    };
    let generation = region.status().generation.load(Ordering::Acquire);
    if generation != args.generation {
        eprintln!("{tag} region generation {generation}, expected {}", args.generation);
        return ExitCode::from(3);
    }
    region.status().pid.store(std::process::id(), Ordering::Relaxed);
    let (Some(requests), Some(replies)) = (region.consumer(REQUEST_RING), region.producer(REPLY_RING)) else {
        unreachable!("a freshly attached region hands out each endpoint once");
    };
    let slots: Vec<TrackRings> = (0..slot_count)
        .map(|s| TrackRings {
            from_host: region.consumer(slot_ring_to_script(s)).expect("fresh region"),
            to_host: region.producer(slot_ring_from_script(s)).expect("fresh region"),
            spec: None,
            backlog: VecDeque::new(),
            newest: None,
            held_events: Vec::new(),
        })
        .collect();
    let mut worker = Worker {
        tag,
        parent: args.parent_pid,
        index: args.worker,
        requests,
        replies,
        slots,
        reassembler: Reassembler::default(),
        jobs: None,
        realtime: None,
        python_env: args.python_env,
        buf: vec![0u8; CONTROL_RING.payload],
        block_out: Vec::new(),
        spare: Vec::new(),
        newest_sent_ns: 0,
    };
    worker.serve(&region)
}

/// One track slot: its rings and the script it runs.
struct TrackRings {
    from_host: Consumer,
    to_host: Producer,
    spec: Option<ScriptSpec>,
    /// Blocks taken off `from_host` and not yet run, oldest first.
    backlog: VecDeque<Block>,
    /// The newest block number taken off `from_host` (what decides whether a
    /// block's result can still be played).
    newest: Option<u64>,
    /// Events of blocks whose result was not sent, for the next message (see `HELD_EVENTS`).
    held_events: Vec<Event>,
}

struct Worker {
    tag: String,
    parent: u32,
    index: usize,
    requests: Consumer,
    replies: Producer,
    slots: Vec<TrackRings>,
    reassembler: Reassembler,
    /// Started at the first job / first script, so a worker pays only for what it serves.
    jobs: Option<JobRuntime>,
    realtime: Option<RealtimeRuntime>,
    /// The Python environment scripts import from (None: the built-in one).
    python_env: Option<std::path::PathBuf>,
    buf: Vec<u8>,
    block_out: Vec<f32>,
    /// Block buffers for the slots' backlogs, reused.
    spare: Vec<Block>,
    /// CLOCK_MONOTONIC when the track pushed the newest block taken (its
    /// header's `sent_ns`), for when to expect the next one.
    newest_sent_ns: u64,
}

/// A block taken off a track's ring: read in place from its slot (header
/// copied out and checked first), its parameters and samples copied
/// straight to where the script reads them.
struct Block {
    header: BlockHeader,
    params: [f32; MAX_PARAMS],
    transport: Transport,
    /// The host's events in the block (notes, MIDI, parameter changes).
    events: Vec<Event>,
    samples: Vec<f32>,
}

impl Default for Block {
    fn default() -> Block {
        Block {
            header: BlockHeader::default(),
            params: [0.0; MAX_PARAMS],
            transport: Transport::default(),
            events: Vec::with_capacity(MAX_BLOCK_EVENTS),
            samples: Vec::new(),
        }
    }
}

impl Worker {
    fn serve(&mut self, region: &Region) -> ExitCode {
        let status = region.status();
        let mut last_reload_check = Instant::now();
        let mut last_block_at: Option<Instant> = None;
        loop {
            status.heartbeat.fetch_add(1, Ordering::Relaxed);
            let mut busy = false;
            match self.serve_control(&status.heartbeat) {
                Ok(Some(code)) => return code,
                Ok(None) => {}
                Err(e) => {
                    eprintln!("{} {e}; exiting", self.tag);
                    return ExitCode::from(5);
                }
            }
            for slot in 0..self.slots.len() {
                busy |= self.serve_blocks(slot, &status.heartbeat);
            }
            if let Some(rt) = &self.realtime {
                if last_reload_check.elapsed() >= Duration::from_millis(50) {
                    last_reload_check = Instant::now();
                    for slot in rt.check_reloads() {
                        if let Some(declared) = rt.declaration(slot) {
                            let sent = send(&mut self.replies, &declared, self.parent);
                            if let Err(e) = sent {
                                eprintln!("{} {e}; exiting", self.tag);
                                return ExitCode::from(5);
                            }
                        }
                    }
                }
            }
            if busy {
                // When the newest block was sent, not now: a worker that
                // finished late still expects the next block a period after
                // the last one was pushed (and is polling, not asleep, when
                // it comes: the track's push then makes no wake-up syscall).
                last_block_at = Some(sent_at(self.newest_sent_ns));
                continue;
            }
            if let Some(code) = self.idle(status, last_block_at) {
                return code;
            }
        }
    }

    /// Waits for work without missing the next block.
    ///
    /// Blocks arrive once per period. Right after a burst the worker sleeps on
    /// the doorbell until shortly before the next one is due, then polls
    /// (yielding the core each time: workers run at SCHED_FIFO, where a plain
    /// spin would hold the core against a sibling worker) until it arrives.
    /// While the worker polls, the track's push finds it awake and makes no
    /// wake-up syscall, and the block is picked up at once instead of after a
    /// scheduler wake-up. If the block does not come, the worker falls back to
    /// sleeping until a producer rings. Returns an exit code when the host is gone.
    fn idle(&mut self, status: &WorkerStatus, last_block_at: Option<Instant>) -> Option<ExitCode> {
        let now = Instant::now();
        let period = self
            .slots
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .map(|spec| Duration::from_secs_f64(spec.frames as f64 / spec.rate.max(1.0)))
            .min();
        let (poll_from, poll_until) = match (period, last_block_at) {
            (Some(period), Some(last)) if now < last + period + WAKE_EARLY => {
                (last + period.saturating_sub(WAKE_EARLY), last + period + WAKE_EARLY)
            }
            _ => (now, now + SPIN),
        };
        if now < poll_from {
            // Returns early if a producer rings; either way, poll next.
            status.doorbell.sleep_unless(|| self.has_work(), Some(poll_from));
        }
        while Instant::now() < poll_until {
            if self.has_work() {
                return None;
            }
            std::thread::yield_now();
        }
        let deadline = Instant::now() + IDLE_WAKE;
        let slept_into_work = status.doorbell.sleep_unless(|| self.has_work(), Some(deadline));
        if !slept_into_work && parent_gone(self.parent) {
            return Some(ExitCode::SUCCESS);
        }
        None
    }

    fn has_work(&mut self) -> bool {
        self.requests.has_message()
            || self.requests.fault().is_some()
            || self.slots.iter_mut().any(|s| s.spec.is_some() && (!s.backlog.is_empty() || s.from_host.has_message()))
    }

    /// Handles every waiting control message. `Some(code)` means exit.
    fn serve_control(&mut self, heartbeat: &AtomicU64) -> Result<Option<ExitCode>, String> {
        loop {
            let len = match self.requests.try_pop(&mut self.buf) {
                Ok(len) => len,
                Err(PopError::Empty) => return Ok(None),
                Err(e) => return Err(format!("request ring unusable ({e:?})")),
            };
            let Some(message) = self.reassembler.push(&self.buf[..len]).map_err(|e| e.to_string())? else {
                continue;
            };
            if message.is_reply() {
                let error = JobReply {
                    result: Err(JobError::new("ProtocolError", "a worker does not take replies")),
                    seconds: 0.0,
                };
                send(&mut self.replies, &Reply::Job { id: message.id, body: Json::new(&error) }, self.parent)?;
                continue;
            }
            match Request::decode(message).map_err(|e| e.to_string())? {
                Request::Shutdown => return Ok(Some(ExitCode::SUCCESS)),
                Request::Job { id, body } => {
                    if self.jobs.is_none() {
                        self.jobs = Some(JobRuntime::new(Some(self.index))?);
                    }
                    let reply = self.jobs.as_ref().expect("started").run(&body);
                    send(&mut self.replies, &Reply::Job { id, body: reply }, self.parent)?;
                }
                Request::LoadScript(spec) => {
                    if spec.slot >= self.slots.len() {
                        return Err(format!("script for slot {} of {}", spec.slot, self.slots.len()));
                    }
                    self.start_realtime(heartbeat)?;
                    let slot = &mut self.slots[spec.slot];
                    // Runs the script's setup: the answer below means it is ready.
                    let rt = self.realtime.as_ref().expect("started");
                    let ok =
                        beating_while(heartbeat, SCRIPT_LOAD_BEAT_LIMIT, || rt.load_with_values(&spec, &spec.values));
                    let loaded = Reply::ScriptLoaded { slot: spec.slot, ok };
                    // What it declares first: the host knows its parameters
                    // by the time it hears the script is ready.
                    if let Some(declared) = rt.declaration(spec.slot) {
                        send(&mut self.replies, &declared, self.parent)?;
                    }
                    // Blocks already waiting are the same track's: the new
                    // script (or, if it did not load, the one it replaces) runs them.
                    slot.spec = Some(spec);
                    send(&mut self.replies, &loaded, self.parent)?;
                }
                Request::UnloadScript { slot: index } => {
                    if let Some(slot) = self.slots.get_mut(index) {
                        slot.spec = None;
                        slot.held_events.clear();
                        self.spare.extend(slot.backlog.drain(..));
                        if let Some(rt) = &self.realtime {
                            rt.unload(index);
                        }
                    }
                }
                Request::Warm => {
                    // A spare: everything a script needs started, no script.
                    self.start_realtime(heartbeat)?;
                    send(&mut self.replies, &Reply::Warm, self.parent)?;
                }
            }
        }
    }

    /// Starts the interpreter for scripts (once), beating meanwhile.
    fn start_realtime(&mut self, heartbeat: &AtomicU64) -> Result<(), String> {
        if self.realtime.is_none() {
            let (index, env) = (self.index, self.python_env.as_deref());
            let runtime = beating_while(heartbeat, STARTUP_BEAT_LIMIT, || RealtimeRuntime::new(Some(index), env))?;
            self.realtime = Some(runtime);
        }
        Ok(())
    }

    /// Processes the blocks waiting on `slot`, in order; true if there were any.
    ///
    /// A worker that fell behind still runs every waiting block through the
    /// script, oldest first, so that its state sees them all. A block whose
    /// result could no longer be played (one L or more newer has come) has
    /// its audio thrown away instead of sent (the track would drop it as
    /// stale); its events still go to the track, with the next result (see
    /// `HELD_EVENTS`). Only when more than L + `CATCH_UP_BLOCKS` blocks are
    /// waiting are the oldest beyond that skipped unseen. One call runs at
    /// most the blocks that were waiting when it began, so a script slower
    /// than real time cannot keep the worker from its other tracks and its
    /// control ring.
    fn serve_blocks(&mut self, slot: usize, heartbeat: &AtomicU64) -> bool {
        let Some(spec) = self.slots[slot].spec.as_ref() else {
            return false;
        };
        let latency = spec.latency_blocks as u64;
        let keep = spec.latency_blocks + CATCH_UP_BLOCKS;
        let mut budget = None;
        loop {
            if !self.take_waiting(slot) {
                return true;
            }
            let rings = &mut self.slots[slot];
            let Some(left) = rings.backlog.front().map(|_| budget.get_or_insert(rings.backlog.len())) else {
                break;
            };
            if *left == 0 {
                break;
            }
            *left -= 1;
            while rings.backlog.len() > keep {
                self.spare.extend(rings.backlog.pop_front());
            }
            let block = rings.backlog.pop_front().expect("a block is waiting");
            heartbeat.fetch_add(1, Ordering::Relaxed);
            if let Some(outcome) = self.run_script(slot, &block) {
                // Blocks that came while the script ran count too: the
                // track may have moved past this one already.
                if !self.take_waiting(slot) {
                    return true;
                }
                let header = block.header;
                let newest = self.slots[slot].newest.unwrap_or(header.seq);
                let playable = header.seq.saturating_add(latency) > newest;
                self.send_reply(slot, &header, &outcome, playable);
            }
            self.spare.push(block);
        }
        budget.is_some()
    }

    /// Moves the blocks waiting on `slot`'s ring into its backlog, reading
    /// each in place: the header is copied out of the slot and checked
    /// against the slot's script, then the parameters and samples go
    /// straight into the backlog's buffers, then the slot is released. A
    /// malformed block is skipped. False if the ring is unusable (the slot
    /// is then dropped: its track sees the fault and the supervisor restarts
    /// this worker).
    fn take_waiting(&mut self, slot: usize) -> bool {
        let rings = &mut self.slots[slot];
        let Some(spec) = rings.spec.as_ref() else {
            return false;
        };
        loop {
            let message = match rings.from_host.read() {
                Ok(message) => message,
                Err(PopError::Empty) => return true,
                Err(e) => {
                    eprintln!("{} track ring {slot} unusable ({e:?})", self.tag);
                    self.spare.extend(rings.backlog.drain(..));
                    rings.spec = None;
                    return false;
                }
            };
            let header = BlockHeader::read_from(&message).ok();
            if let Some(h) = &header {
                rings.newest = Some(rings.newest.map_or(h.seq, |n| n.max(h.seq)));
            }
            let mut context = [0u8; CONTEXT_BYTES];
            let context = message.copy_to(HEADER_BYTES, &mut context).then(|| Transport::decode(&context));
            let block = header.zip(context).and_then(|(h, (transport, events))| {
                let layout = h.check_process(message.len(), events, spec.track, spec.frames, spec.channels).ok()?;
                let mut block = self.spare.pop().unwrap_or_default();
                block.header = h;
                block.transport = transport;
                block.samples.resize(spec.channels * spec.frames, 0.0);
                // The length was checked: every copy is inside the message.
                message.copy_f32s_to(layout.params, &mut block.params[..h.count as usize]);
                block.events.clear();
                for i in 0..events as usize {
                    let mut bytes = [0u8; EVENT_BYTES];
                    message.copy_to(layout.event(i), &mut bytes);
                    // Only what a host sends: a parameter "move" is the script's.
                    match Event::decode(&bytes) {
                        Some(Event { action: EventAction::SetParam { .. }, .. }) | None => {}
                        Some(event) => block.events.push(event),
                    }
                }
                message.copy_f32s_to(layout.samples, &mut block.samples);
                Some(block)
            });
            message.release();
            match block {
                Some(block) => {
                    self.newest_sent_ns = self.newest_sent_ns.max(block.header.sent_ns);
                    rings.backlog.push_back(block)
                }
                None => eprintln!("{} malformed block on slot {slot}; skipped", self.tag),
            }
        }
    }

    /// Runs the slot's script (its process and tick) on one block. None if
    /// the slot's script changed shape since the block was taken (skipped).
    fn run_script(&mut self, slot: usize, block: &Block) -> Option<BlockOutcome> {
        let spec = self.slots[slot].spec.as_ref()?;
        let h = &block.header;
        let channels = h.channels as usize;
        if h.track != spec.track || channels != spec.channels || block.samples.len() != channels * spec.frames {
            eprintln!("{} malformed block on slot {slot}; skipped", self.tag);
            return None;
        }
        self.block_out.resize(block.samples.len(), 0.0);
        let rt = self.realtime.as_ref().expect("a loaded slot started the runtime");
        let outcome = rt.process(
            &BlockIn {
                slot,
                seq: h.seq,
                sample_time: h.sample_time,
                channels,
                params: &block.params[..h.count as usize],
                transport: &block.transport,
                events: &block.events,
                samples: &block.samples,
            },
            &mut self.block_out,
        );
        Some(outcome)
    }

    /// Sends a block's result and its events to the track, each written in
    /// place into its ring slot; with `audio` false (the result is too late
    /// to be played), holds its events for the next result instead.
    fn send_reply(&mut self, slot: usize, h: &BlockHeader, outcome: &BlockOutcome, audio: bool) {
        let rings = &mut self.slots[slot];
        if rings.spec.is_none() {
            return;
        }
        let held = &mut rings.held_events;
        held.extend_from_slice(&outcome.events);
        if !audio {
            let excess = held.len().saturating_sub(HELD_EVENTS);
            held.drain(..excess);
            return;
        }
        // The result first: it is what the track is waiting for.
        if outcome.status != ResultStatus::Processed {
            self.block_out.fill(0.0);
        }
        let header = BlockHeader {
            kind: BlockKind::Result as u32,
            status: outcome.status as u32,
            count: 0,
            done_ns: monotonic_ns(),
            ..*h
        };
        let mut head = [0u8; HEADER_BYTES];
        header.encode(&mut head);
        if let Ok(mut reply) = rings.to_host.reserve() {
            reply.put_bytes(0, &head);
            reply.put_f32s(HEADER_BYTES, &self.block_out);
            let _ = reply.commit(block::result_len(self.block_out.len()));
        }
        for chunk in rings.held_events.chunks(MAX_EVENTS_PER_REPLY) {
            let header = BlockHeader { kind: BlockKind::Events as u32, count: chunk.len() as u32, status: 0, ..*h };
            header.encode(&mut head);
            let Ok(mut reply) = rings.to_host.reserve() else { break };
            reply.put_bytes(0, &head);
            let mut bytes = [0u8; EVENT_BYTES];
            for (i, event) in chunk.iter().enumerate() {
                event.encode(&mut bytes);
                reply.put_bytes(block::events_len(i), &bytes);
            }
            let _ = reply.commit(block::events_len(chunk.len()));
        }
        rings.held_events.clear();
    }
}

/// The instant a block was pushed, from its `sent_ns` (CLOCK_MONOTONIC, as
/// `Instant` is); now if that is not a moment of the last second.
fn sent_at(sent_ns: u64) -> Instant {
    let now = Instant::now();
    let ago = monotonic_ns().checked_sub(sent_ns).filter(|&ns| ns < 1_000_000_000);
    ago.and_then(|ns| now.checked_sub(Duration::from_nanos(ns))).unwrap_or(now)
}

/// Runs `work` while a helper thread beats the heartbeat, for at most
/// `limit`. For starting the interpreter (CPython, numpy and the runtime:
/// alone that takes a fifth of a second, but with several workers starting
/// at once on a busy machine it took over a second, the supervisor's
/// heartbeat timeout, and the worker was killed as hung, restarted, killed
/// again) and for a script's first load (its imports and setup, see
/// `SCRIPT_LOAD_BEAT_LIMIT`). A script's blocks and its reloads never run
/// under this: a hang there is caught at the heartbeat timeout.
fn beating_while<T>(heartbeat: &AtomicU64, limit: Duration, work: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let beater = scope.spawn(|| {
            let began = Instant::now();
            while !done.load(Ordering::Acquire) && began.elapsed() < limit {
                heartbeat.fetch_add(1, Ordering::Relaxed);
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        let result = work();
        done.store(true, Ordering::Release);
        beater.thread().unpark();
        result
    })
}

/// Sends a reply, waiting for ring space as long as the host lives.
fn send(ring: &mut Producer, reply: &Reply, parent: u32) -> Result<(), String> {
    for fragment in reply.fragments() {
        let mut since = Instant::now();
        loop {
            match ring.try_push(&fragment) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    std::thread::sleep(Duration::from_micros(50));
                    if since.elapsed() > Duration::from_secs(1) {
                        if parent_gone(parent) {
                            return Err("host gone".into());
                        }
                        since = Instant::now();
                    }
                }
                Err(e) => return Err(format!("reply ring unusable ({e:?})")),
            }
        }
    }
    Ok(())
}
