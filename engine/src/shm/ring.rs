//! A single-producer single-consumer ring of fixed-size slots, in memory shared
//! with another process that we do not trust.
//!
//! # Guarantees
//!
//! - [`Producer::try_push`] and [`Consumer::try_pop`] are wait-free: a bounded
//!   number of atomic loads and stores, one copy of at most one slot, no lock,
//!   no allocation. The only syscall either may make is a non-blocking
//!   `FUTEX_WAKE`, made by the producer only when the consumer said it is asleep.
//!   Both are safe to call from a realtime thread.
//! - The peer's position is validated every time it is read. A value that no
//!   well-behaved peer could have written (a position moving backwards, a ring
//!   more than full, a slot length beyond the slot) *faults* the endpoint: it
//!   stops touching the ring and reports [`RingFault`] from then on. A hostile
//!   peer can make us drop or garble messages; it cannot make us read or write
//!   outside the ring, panic, or block.
//! - Messages can be written and read in place: [`Producer::reserve`] hands
//!   out the next free slot as a [`WriteSlot`] to write into and
//!   [`WriteSlot::commit`] publishes it (rtrb's `write_chunk` shape);
//!   [`Consumer::read`] hands out the oldest message as a [`ReadSlot`], its
//!   length validated, and [`ReadSlot::release`] frees it. Both are wait-free
//!   and realtime-safe like `try_push`/`try_pop`, which are built on them.
//! - Every byte of a slot is accessed with volatile loads and stores (its
//!   length word with an atomic), never through a reference, a plain slice or
//!   `copy_nonoverlapping`: what Rust allows for memory that something
//!   outside the program may change meanwhile. A hostile peer writing a slot
//!   while we read or write it can only garble bytes. Readers copy out, then
//!   validate the copy, so what was checked cannot change under them.
//!
//! # Protocol
//!
//! `tail` counts slots pushed (written only by the producer), `head` counts slots
//! popped (written only by the consumer). Both are `u64` and never wrap in
//! practice (2^64 blocks of 64 frames at 48 kHz is millions of years). Slot
//! `p % capacity` holds message `p`. The producer publishes a slot with a
//! `Release` store of `tail`; the consumer reads `tail` with `Acquire` before
//! reading the slot, and frees it with a `Release` store of `head`, which the
//! producer reads with `Acquire` before overwriting the slot. Each side keeps its
//! own position locally (the authoritative copy; the shared word is only a
//! publication) and caches the peer's, so an uncontended push or pop touches the
//! peer's cache line only when the cached value says the ring is full or empty.
//!
//! # Example
//!
//! A ring in a region (made here by the host, attached by a worker in the
//! other process; both ends in one process for the example):
//!
//! ```
//! use outboard_engine::shm::region::Region;
//! use outboard_engine::shm::ring::{PopError, RingShape};
//!
//! let mut region = Region::create(&[RingShape { capacity: 8, payload: 256 }])?;
//! let mut producer = region.producer(0).expect("the ring's one producer");
//! let mut consumer = region.consumer(0).expect("the ring's one consumer");
//! producer.try_push(b"block 1").unwrap();
//! let mut buf = [0u8; 256];
//! let len = consumer.try_pop(&mut buf).unwrap();
//! assert_eq!(&buf[..len], b"block 1");
//! assert_eq!(consumer.try_pop(&mut buf), Err(PopError::Empty));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Sleeping: a consumer with nothing to do spins briefly, then sleeps on its
//! [`Doorbell`] until the ring has a message; after publishing, the producer
//! rings it, which wakes the consumer only if it said it is asleep (the
//! hand-shake is the doorbell's, checked by its own loom model). The `loom`
//! model in this module checks the data path, and a consumer sleeping on
//! its ring.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::doorbell::Doorbell;
use super::sync::{AtomicU64, Ordering};

/// Bytes before each slot's payload: the payload length (u32) and 4 reserved bytes.
const SLOT_HEADER: usize = 8;
/// Slots are laid out on 64-byte boundaries so a slot never shares a cache line
/// with its neighbour's header.
const SLOT_ALIGN: usize = 64;
/// Largest payload one slot may carry. Also bounds what a peer can make us copy.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest number of slots in one ring.
pub const MAX_CAPACITY: usize = 1 << 16;
/// Largest position an endpoint resumes at. Positions count from 0 and never
/// get near 2^63 (millions of years of blocks), so a larger one found in shared
/// memory was written by a hostile peer; resuming there would let the next
/// push or pop overflow the position.
const MAX_START: u64 = 1 << 63;

/// The ring's shared control words, at the start of the ring's memory.
///
/// `#[repr(C)]` because two processes map it. Every field is an atomic: the peer
/// may write any of them at any time, and all-zero is a valid (empty) state.
#[repr(C)]
pub struct RingControl {
    /// Slots pushed so far. Written by the producer only.
    tail: CachePadded<AtomicU64>,
    /// Slots popped so far. Written by the consumer only.
    head: CachePadded<AtomicU64>,
    /// The consumer's own doorbell, for rings whose consumer waits on this ring
    /// alone (a region can instead point a ring at a doorbell shared by several).
    wake: CachePadded<Doorbell>,
}

impl RingControl {
    /// Bytes the control block takes before the first slot (a multiple of 128).
    #[cfg(not(loom))]
    pub const BYTES: usize = std::mem::size_of::<RingControl>();

    #[cfg(loom)]
    fn new() -> Self {
        RingControl {
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            wake: CachePadded::new(Doorbell::new()),
        }
    }

    /// The ring's own doorbell.
    pub(crate) fn own_doorbell(&self) -> NonNull<Doorbell> {
        NonNull::from(&*self.wake)
    }
}

/// The shape of one ring: how many slots, and how many payload bytes each holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingShape {
    /// Slots in the ring: how many messages it holds before the producer
    /// sees it full (1 to [`MAX_CAPACITY`]).
    pub capacity: usize,
    /// Bytes of message one slot holds (at most [`MAX_PAYLOAD`]).
    pub payload: usize,
}

impl RingShape {
    /// Distance between two slots.
    pub fn stride(&self) -> usize {
        (SLOT_HEADER + self.payload).div_ceil(SLOT_ALIGN) * SLOT_ALIGN
    }

    /// Whether the shape is within the limits every endpoint accepts.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_CAPACITY).contains(&self.capacity) && self.payload <= MAX_PAYLOAD
    }

    /// Bytes of shared memory the ring occupies, control block included.
    ///
    /// ```
    /// # use outboard_engine::shm::ring::RingShape;
    /// // Slots are 64-byte aligned: 100 payload bytes and the 8-byte slot
    /// // header take two cache lines.
    /// let shape = RingShape { capacity: 4, payload: 100 };
    /// assert_eq!(shape.stride(), 128);
    /// assert!(shape.bytes() >= 4 * 128);
    /// ```
    #[cfg(not(loom))]
    pub fn bytes(&self) -> usize {
        RingControl::BYTES + self.capacity * self.stride()
    }
}

/// Why an endpoint stopped using its ring. Sticky: once faulted, always faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// The consumer's `head` moved backwards or past our `tail`, or was past
    /// 2^63 when the consumer was made.
    HeadOutOfRange {
        /// The value found in shared memory.
        seen: u64,
        /// The lowest value a well-behaved consumer could have written.
        low: u64,
        /// The highest.
        high: u64,
    },
    /// The producer's `tail` moved backwards or more than a ring ahead of our
    /// `head`, or was past 2^63 when the producer was made.
    TailOutOfRange {
        /// The value found in shared memory.
        seen: u64,
        /// The lowest value a well-behaved producer could have written.
        low: u64,
        /// The highest.
        high: u64,
    },
    /// A slot claimed a payload longer than a slot holds.
    SlotLengthOutOfRange {
        /// The length word found in the slot.
        seen: u32,
        /// The ring's payload per slot.
        max: usize,
    },
}

impl fmt::Display for RingFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingFault::HeadOutOfRange { seen, low, high } => {
                write!(f, "head {seen} outside [{low}, {high}]")
            }
            RingFault::TailOutOfRange { seen, low, high } => {
                write!(f, "tail {seen} outside [{low}, {high}]")
            }
            RingFault::SlotLengthOutOfRange { seen, max } => {
                write!(f, "slot length {seen} exceeds the slot's {max} bytes")
            }
        }
    }
}

/// Why a push (or a reservation) wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Every slot holds a message the consumer has not taken yet.
    Full,
    /// The message is longer than a slot's payload (a caller bug, not a fault).
    TooLarge {
        /// The message's length (or the length asked to commit).
        len: usize,
        /// The ring's payload per slot.
        max: usize,
    },
    /// The ring is faulted; nothing was written.
    Faulted(RingFault),
}

/// Why a pop (or a read) took nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopError {
    /// No message is waiting.
    Empty,
    /// The caller's buffer is shorter than the message; it stays in the ring.
    BufferTooSmall {
        /// The message's length.
        needed: usize,
    },
    /// The ring is faulted; nothing was read.
    Faulted(RingFault),
}

/// Who keeps the ring's memory mapped: endpoints hold one so the memory outlives them.
pub(crate) type Owner = Arc<dyn Send + Sync>;

/// Pointers into the ring's memory, common to both endpoints.
pub(crate) struct RingPtrs {
    ctrl: NonNull<RingControl>,
    slots: NonNull<u8>,
    /// Where this ring's consumer sleeps: the ring's own or a shared one.
    doorbell: NonNull<Doorbell>,
    shape: RingShape,
    _owner: Owner,
    #[cfg(loom)]
    tracker: Arc<Vec<loom::cell::UnsafeCell<()>>>,
}

impl RingPtrs {
    fn ctrl(&self) -> &RingControl {
        // SAFETY: `ctrl` points to a RingControl that lives as long as `_owner`
        // (guaranteed by the constructor's contract), and every field of it is
        // an atomic, so shared references are sound even while the peer writes.
        unsafe { self.ctrl.as_ref() }
    }

    fn doorbell(&self) -> &Doorbell {
        // SAFETY: the doorbell lives in the same mapping as the ring (the
        // constructor's contract), is all atomics, and outlives `_owner`.
        unsafe { self.doorbell.as_ref() }
    }

    fn slot(&self, position: u64) -> *mut u8 {
        let index = (position % self.shape.capacity as u64) as usize;
        // SAFETY: index < capacity, and the constructor's contract says
        // `capacity * stride` bytes from `slots` belong to this ring.
        unsafe { self.slots.as_ptr().add(index * self.shape.stride()) }
    }
}

/// The writing end of a ring. `Send` but not `Sync` or `Clone`: exactly one
/// thread pushes at a time.
pub struct Producer {
    ring: RingPtrs,
    /// Authoritative count of slots pushed.
    tail: u64,
    /// Last validated `head` read from the consumer.
    head_cache: u64,
    fault: Option<RingFault>,
}

/// The reading end of a ring. `Send` but not `Sync` or `Clone`.
pub struct Consumer {
    ring: RingPtrs,
    /// Authoritative count of slots popped.
    head: u64,
    /// Last validated `tail` read from the producer.
    tail_cache: u64,
    fault: Option<RingFault>,
}

// SAFETY: the endpoints own their local state; the shared memory they point to
// is accessed only through atomics and through slot copies ordered by the
// protocol above, and is kept alive by `_owner`, which is Send + Sync.
unsafe impl Send for Producer {}
// SAFETY: as for Producer.
unsafe impl Send for Consumer {}

impl Producer {
    /// Makes the producer of `ring`, resuming at the `tail` found there
    /// (faulted from the start if no well-behaved peer could have left it there).
    ///
    /// # Safety
    /// No other producer may exist for this ring (in this process: the
    /// peer's side is the peer's).
    pub(crate) unsafe fn new(ring: RingPtrs) -> Producer {
        let tail = ring.ctrl().tail.load(Ordering::Acquire);
        if tail > MAX_START {
            // Our own word, but the peer can write it too (the host takes a
            // ring's endpoints after its worker is running).
            let fault = RingFault::TailOutOfRange { seen: tail, low: 0, high: MAX_START };
            return Producer { ring, tail: 0, head_cache: 0, fault: Some(fault) };
        }
        let head = ring.ctrl().head.load(Ordering::Acquire);
        let low = tail.saturating_sub(ring.shape.capacity as u64);
        let mut producer = Producer { ring, tail, head_cache: low, fault: None };
        producer.accept_head(head);
        producer
    }

    /// The ring's shape.
    pub fn shape(&self) -> RingShape {
        self.ring.shape
    }

    /// Why the ring was given up, if it was.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Slots free for pushing, as far as the last look at the consumer tells.
    /// Refreshes that look. Wait-free.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// assert_eq!(producer.free_slots(), 2);
    /// producer.try_push(b"one").unwrap();
    /// assert_eq!(producer.free_slots(), 1);
    /// consumer.try_pop(&mut [0u8; 64]).unwrap();
    /// assert_eq!(producer.free_slots(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn free_slots(&mut self) -> usize {
        if self.fault.is_some() {
            return 0;
        }
        let head = self.ring.ctrl().head.load(Ordering::Acquire);
        if !self.accept_head(head) {
            return 0;
        }
        self.ring.shape.capacity - (self.tail - self.head_cache) as usize
    }

    /// Validates a `head` read from the consumer and caches it, or faults.
    fn accept_head(&mut self, head: u64) -> bool {
        // A well-behaved consumer's head never moves back and never passes what
        // we have published; since head_cache >= tail - capacity, the ring can
        // then never look more than full.
        if head < self.head_cache || head > self.tail {
            self.fault = Some(RingFault::HeadOutOfRange { seen: head, low: self.head_cache, high: self.tail });
            return false;
        }
        self.head_cache = head;
        true
    }

    /// Copies `msg` into the next slot and publishes it. Wait-free, realtime-safe.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// producer.try_push(b"one").unwrap();
    /// producer.try_push(b"two").unwrap();
    /// // Both slots hold unread messages.
    /// assert_eq!(producer.try_push(b"three"), Err(PushError::Full));
    /// // Longer than a slot: a caller's bug, refused whole.
    /// assert_eq!(producer.try_push(&[0; 65]), Err(PushError::TooLarge { len: 65, max: 64 }));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_push(&mut self, msg: &[u8]) -> Result<(), PushError> {
        if let Some(fault) = self.fault {
            return Err(PushError::Faulted(fault));
        }
        let max = self.ring.shape.payload;
        if msg.len() > max {
            return Err(PushError::TooLarge { len: msg.len(), max });
        }
        let mut slot = self.reserve()?;
        slot.put_bytes(0, msg);
        slot.commit(msg.len())
    }

    /// Reserves the next slot to write a message straight into it, without a
    /// scratch copy (rtrb's `write_chunk` shape): write with the `put_*`
    /// methods, then [`WriteSlot::commit`] publishes it. Dropping the guard
    /// uncommitted publishes nothing and leaves the slot free. `Full` when
    /// every slot holds an unread message. Wait-free, realtime-safe.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// let mut slot = producer.reserve().unwrap();
    /// slot.put_u32(0, 2);
    /// slot.put_f32s(4, &[0.5, -0.5]);
    /// slot.commit(12).unwrap();
    /// // A write past the slot writes nothing and spoils the message.
    /// let mut slot = producer.reserve().unwrap();
    /// slot.put_u64(60, 1);
    /// assert!(matches!(slot.commit(64), Err(PushError::TooLarge { .. })));
    ///
    /// let message = consumer.read().unwrap();
    /// let mut samples = [0.0f32; 2];
    /// assert_eq!(message.u32_at(0), Some(2));
    /// assert!(message.copy_f32s_to(4, &mut samples));
    /// assert_eq!(samples, [0.5, -0.5]);
    /// message.release();
    /// assert_eq!(consumer.read().err(), Some(PopError::Empty));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reserve(&mut self) -> Result<WriteSlot<'_>, PushError> {
        if let Some(fault) = self.fault {
            return Err(PushError::Faulted(fault));
        }
        let capacity = self.ring.shape.capacity as u64;
        if self.tail - self.head_cache == capacity {
            let head = self.ring.ctrl().head.load(Ordering::Acquire);
            if !self.accept_head(head) {
                return Err(PushError::Faulted(self.fault.expect("just set")));
            }
            if self.tail - head == capacity {
                return Err(PushError::Full);
            }
        }
        // The slot is ours: the consumer's head (Acquire, above or at an
        // earlier reserve) is past the message that last used it, so the
        // consumer will not read it until commit's Release store of `tail`.
        let slot = self.ring.slot(self.tail);
        let access = self.ring.write_access(self.tail);
        Ok(WriteSlot { slot, payload: self.ring.shape.payload, overflow: false, access, producer: self })
    }
}

/// The next free slot of a ring, reserved by [`Producer::reserve`] and
/// written in place. Offsets count from the start of the message (the slot's
/// payload). A write that would not fit writes nothing and makes
/// [`commit`](WriteSlot::commit) refuse the message (`TooLarge`): no panic.
/// Every write is a run of volatile stores (see the module docs).
pub struct WriteSlot<'a> {
    producer: &'a mut Producer,
    /// The slot's start (its length word); the payload follows the slot header.
    slot: *mut u8,
    payload: usize,
    overflow: bool,
    access: WriteAccess,
}

impl WriteSlot<'_> {
    /// Bytes a message in this slot may hold.
    pub fn capacity(&self) -> usize {
        self.payload
    }

    /// Where `len` bytes at `offset` go, if they fit the slot.
    fn span(&mut self, offset: usize, len: usize) -> Option<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.payload => {
                // SAFETY: SLOT_HEADER + offset + len <= the slot's stride, so
                // the pointer stays in the slot.
                Some(unsafe { self.slot.add(SLOT_HEADER + offset) })
            }
            _ => {
                self.overflow = true;
                None
            }
        }
    }

    /// Writes `bytes` at `offset`.
    pub fn put_bytes(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(dst) = self.span(offset, bytes.len()) {
            // SAFETY: the span is in the slot, which the protocol gives to us
            // alone until commit (see `Producer::reserve`); a hostile peer's
            // writes can only race with our volatile stores.
            unsafe { shared::store_bytes(dst, bytes) }
        }
    }

    /// Writes `value` at `offset`, little-endian.
    pub fn put_u32(&mut self, offset: usize, value: u32) {
        self.put_bytes(offset, &value.to_le_bytes());
    }

    /// Writes `value` at `offset`, little-endian.
    pub fn put_u64(&mut self, offset: usize, value: u64) {
        self.put_bytes(offset, &value.to_le_bytes());
    }

    /// Writes `values` at `offset` as little-endian f32s.
    pub fn put_f32s(&mut self, offset: usize, values: &[f32]) {
        let Some(len) = values.len().checked_mul(4) else {
            self.overflow = true;
            return;
        };
        if let Some(dst) = self.span(offset, len) {
            // SAFETY: as in put_bytes.
            unsafe { shared::store_f32s(dst, values) }
        }
    }

    /// Publishes the first `len` bytes of the slot as the next message and
    /// wakes the consumer if it sleeps. `TooLarge` (nothing published, the
    /// slot stays free) if `len` exceeds the slot or a write did not fit.
    pub fn commit(self, len: usize) -> Result<(), PushError> {
        let WriteSlot { producer, slot, payload, overflow, access } = self;
        if overflow || len > payload {
            return Err(PushError::TooLarge { len, max: payload });
        }
        // SAFETY: the slot starts 64-byte aligned and is ours until published.
        unsafe { shared::store_len(slot, len as u32) };
        // The claim on the slot ends before the publication below.
        #[allow(clippy::drop_non_drop)] // a loom guard under cfg(loom)
        drop(access);
        producer.tail += 1;
        producer.ring.ctrl().tail.store(producer.tail, Ordering::Release);
        producer.ring.doorbell().ring();
        Ok(())
    }
}

impl Consumer {
    /// Makes the consumer of `ring`, resuming at the `head` found there
    /// (faulted from the start if no well-behaved peer could have left it there).
    ///
    /// # Safety
    /// No other consumer may exist for this ring (in this process).
    pub(crate) unsafe fn new(ring: RingPtrs) -> Consumer {
        let head = ring.ctrl().head.load(Ordering::Acquire);
        if head > MAX_START {
            // As in Producer::new: the peer can have written our own word.
            let fault = RingFault::HeadOutOfRange { seen: head, low: 0, high: MAX_START };
            return Consumer { ring, head: 0, tail_cache: 0, fault: Some(fault) };
        }
        Consumer { ring, head, tail_cache: head, fault: None }
    }

    /// The ring's shape.
    pub fn shape(&self) -> RingShape {
        self.ring.shape
    }

    /// Why the ring was given up, if it was: the producer wrote what no
    /// well-behaved producer writes.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Validates a `tail` read from the producer and caches it, or faults.
    fn accept_tail(&mut self, tail: u64) -> bool {
        let high = self.head + self.ring.shape.capacity as u64;
        if tail < self.tail_cache || tail > high {
            self.fault = Some(RingFault::TailOutOfRange { seen: tail, low: self.tail_cache, high });
            return false;
        }
        self.tail_cache = tail;
        true
    }

    /// Whether a message is waiting. Refreshes the cached tail when needed. Wait-free.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// assert!(!consumer.has_message());
    /// producer.try_push(b"one").unwrap();
    /// assert!(consumer.has_message());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn has_message(&mut self) -> bool {
        if self.fault.is_some() {
            return false;
        }
        if self.head == self.tail_cache {
            let tail = self.ring.ctrl().tail.load(Ordering::Acquire);
            if !self.accept_tail(tail) {
                return false;
            }
        }
        self.head != self.tail_cache
    }

    /// Copies the next message into `out` and frees its slot; returns its length.
    /// Wait-free, realtime-safe.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// producer.try_push(b"a message").unwrap();
    /// // Too short a buffer: the message stays in the ring.
    /// assert_eq!(consumer.try_pop(&mut [0u8; 4]), Err(PopError::BufferTooSmall { needed: 9 }));
    /// let mut buf = [0u8; 64];
    /// assert_eq!(consumer.try_pop(&mut buf), Ok(9));
    /// assert_eq!(&buf[..9], b"a message");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_pop(&mut self, out: &mut [u8]) -> Result<usize, PopError> {
        let message = self.read()?;
        let len = message.len();
        if len > out.len() {
            return Err(PopError::BufferTooSmall { needed: len });
        }
        message.copy_to(0, &mut out[..len]);
        message.release();
        Ok(len)
    }

    /// The oldest message, read in place: a guard over its slot, whose length
    /// has been validated (a length beyond the slot faults the ring). Copy out
    /// what you need with the guard's methods, validate the copies, then
    /// [`ReadSlot::release`] frees the slot; dropping the guard unreleased
    /// leaves the message in the ring. Wait-free, realtime-safe.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// producer.try_push(&7u64.to_le_bytes()).unwrap();
    /// let message = consumer.read().unwrap();
    /// assert_eq!(message.len(), 8);
    /// assert_eq!(message.u64_at(0), Some(7));
    /// assert_eq!(message.u64_at(4), None, "past the message's end");
    /// drop(message); // unreleased: still there
    /// assert!(consumer.has_message());
    /// consumer.read().unwrap().release();
    /// assert!(!consumer.has_message());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read(&mut self) -> Result<ReadSlot<'_>, PopError> {
        if !self.has_message() {
            return Err(match self.fault {
                Some(fault) => PopError::Faulted(fault),
                None => PopError::Empty,
            });
        }
        // `tail` (Acquire) is past this slot, so the producer wrote it before
        // its Release store and will not touch it again until our Release
        // store of `head`. A hostile producer may still write it now: we only
        // load through `shared`, and validate what we loaded before using it.
        let slot = self.ring.slot(self.head);
        let max = self.ring.shape.payload;
        let access = self.ring.read_access(self.head);
        // SAFETY: the slot starts 64-byte aligned, inside the ring.
        let len = unsafe { shared::load_len(slot) };
        if len as usize > max {
            #[allow(clippy::drop_non_drop)] // a loom guard under cfg(loom)
            drop(access);
            let fault = RingFault::SlotLengthOutOfRange { seen: len, max };
            self.fault = Some(fault);
            return Err(PopError::Faulted(fault));
        }
        // SAFETY: the payload follows the slot header, inside the slot.
        let payload = unsafe { slot.add(SLOT_HEADER) };
        Ok(ReadSlot { payload, len: len as usize, access, consumer: self })
    }

    /// Pops the next message, sleeping until one arrives or `timeout` passes.
    /// Spins `spins` times first. Blocks: never call it on a realtime thread.
    ///
    /// ```
    /// # use outboard_engine::shm::region::Region;
    /// # use outboard_engine::shm::ring::{PopError, PushError, RingShape};
    /// let mut region = Region::create(&[RingShape { capacity: 2, payload: 64 }])?;
    /// let (mut producer, mut consumer) = (region.producer(0).unwrap(), region.consumer(0).unwrap());
    /// # use std::time::Duration;
    /// let writer = std::thread::spawn(move || producer.try_push(b"later").unwrap());
    /// let mut buf = [0u8; 64];
    /// let len = consumer.pop_wait(&mut buf, 100, Some(Duration::from_secs(10))).unwrap();
    /// assert_eq!(&buf[..len], b"later");
    /// writer.join().unwrap();
    /// // Nothing more comes: the wait ends at its timeout.
    /// assert_eq!(consumer.pop_wait(&mut buf, 0, Some(Duration::from_millis(1))), Err(PopError::Empty));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pop_wait(&mut self, out: &mut [u8], spins: u32, timeout: Option<Duration>) -> Result<usize, PopError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match self.try_pop(out) {
                Err(PopError::Empty) => {}
                other => return other,
            }
            if !self.wait_for_message(spins, deadline) {
                return Err(PopError::Empty);
            }
        }
    }

    /// Blocks until a message is waiting (true) or `deadline` passes (false).
    pub fn wait_for_message(&mut self, spins: u32, deadline: Option<Instant>) -> bool {
        for _ in 0..spins {
            if self.has_message() || self.fault.is_some() {
                return true;
            }
            std::hint::spin_loop();
        }
        loop {
            let doorbell = self.ring.doorbell;
            // SAFETY: as in RingPtrs::doorbell; copied out so `self` can be
            // borrowed mutably by the readiness check.
            let doorbell = unsafe { doorbell.as_ref() };
            if doorbell.sleep_unless(|| self.has_message() || self.fault.is_some(), deadline) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }
}

impl Consumer {
    /// A handle that can tell whether this ring seems to have a message and
    /// sleep until it does, without the consumer: from any thread, while
    /// another holds the consumer (see [`sleep_until_any`]).
    #[cfg(not(loom))]
    pub fn watch(&self) -> RingWatch {
        RingWatch { ctrl: self.ring.ctrl, doorbell: self.ring.doorbell, _owner: self.ring._owner.clone() }
    }
}

/// Looks at a ring from its consumer's side without consuming: made by
/// [`Consumer::watch`]. `Send`, `Sync` and `Clone`: it only loads the ring's
/// positions and sleeps on its consumer's doorbell, and keeps the ring's
/// memory mapped while it lives.
#[cfg(not(loom))]
#[derive(Clone)]
pub struct RingWatch {
    ctrl: NonNull<RingControl>,
    doorbell: NonNull<Doorbell>,
    _owner: Owner,
}

// SAFETY: the pointers reach only atomics in memory that `_owner` (Send +
// Sync) keeps mapped; loading and waiting on atomics is sound from any thread.
#[cfg(not(loom))]
unsafe impl Send for RingWatch {}
// SAFETY: as above; every method takes `&self` and only loads atomics.
#[cfg(not(loom))]
unsafe impl Sync for RingWatch {}

#[cfg(not(loom))]
impl RingWatch {
    fn ctrl(&self) -> &RingControl {
        // SAFETY: as in RingPtrs::ctrl: all atomics, kept mapped by `_owner`.
        unsafe { self.ctrl.as_ref() }
    }

    fn doorbell(&self) -> &Doorbell {
        // SAFETY: as in RingPtrs::doorbell.
        unsafe { self.doorbell.as_ref() }
    }

    /// Whether the producer has published past what the consumer took: a
    /// hint only (the positions are not validated here; a hostile peer can
    /// make it say anything). The consumer's pop is what validates.
    pub fn looks_ready(&self) -> bool {
        self.ctrl().tail.load(Ordering::Acquire) != self.ctrl().head.load(Ordering::Relaxed)
    }
}

/// Sleeps until one of `watches` looks ready (true), or `deadline` passes or
/// the sleep ends early (false: look again): [`Doorbell::sleep_any`] over
/// their consumers' doorbells, so whichever producer publishes first wakes
/// us. Only one thread may sleep on a given ring's doorbell at a time
/// (it is its consumer's). Blocks: never on a realtime thread.
#[cfg(not(loom))]
pub fn sleep_until_any(watches: &[RingWatch], deadline: Option<Instant>) -> bool {
    let bells: Vec<&Doorbell> = watches.iter().map(RingWatch::doorbell).collect();
    Doorbell::sleep_any(&bells, || watches.iter().any(RingWatch::looks_ready), deadline)
}

/// The oldest message of a ring, read in place: see [`Consumer::read`].
/// Offsets count from the start of the message; a read outside the message
/// (its validated length) copies nothing and says so. Every read is a run of
/// volatile loads (see the module docs): copy out, then validate the copy.
pub struct ReadSlot<'a> {
    consumer: &'a mut Consumer,
    payload: *const u8,
    /// The message's length, validated (at most the slot's payload) when the
    /// guard was made; the peer rewriting the slot's length word since
    /// changes nothing here.
    len: usize,
    access: ReadAccess,
}

impl ReadSlot<'_> {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message has no bytes (an empty message is still a message).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `len` bytes at `offset` are, if inside the message.
    fn span(&self, offset: usize, len: usize) -> Option<*const u8> {
        match offset.checked_add(len) {
            // SAFETY: offset + len <= self.len <= payload: inside the slot.
            Some(end) if end <= self.len => Some(unsafe { self.payload.add(offset) }),
            _ => None,
        }
    }

    /// Copies `out.len()` bytes at `offset` into `out`; false (and nothing
    /// copied) if they are not all inside the message.
    pub fn copy_to(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(src) = self.span(offset, out.len()) else { return false };
        // SAFETY: the span is inside the slot, which the protocol leaves to us
        // until release (see `Consumer::read`); a hostile peer's writes can
        // only race with our volatile loads.
        unsafe { shared::load_bytes(src, out) };
        true
    }

    /// The little-endian u32 at `offset`, if inside the message.
    pub fn u32_at(&self, offset: usize) -> Option<u32> {
        let mut bytes = [0u8; 4];
        self.copy_to(offset, &mut bytes).then(|| u32::from_le_bytes(bytes))
    }

    /// The little-endian u64 at `offset`, if inside the message.
    pub fn u64_at(&self, offset: usize) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.copy_to(offset, &mut bytes).then(|| u64::from_le_bytes(bytes))
    }

    /// Copies `out.len()` little-endian f32s at `offset` into `out`; false
    /// (and nothing copied) if they are not all inside the message.
    pub fn copy_f32s_to(&self, offset: usize, out: &mut [f32]) -> bool {
        let Some(src) = out.len().checked_mul(4).and_then(|len| self.span(offset, len)) else { return false };
        // SAFETY: as in copy_to.
        unsafe { shared::load_f32s(src, out) };
        true
    }

    /// Frees the slot: the message is consumed.
    pub fn release(self) {
        let ReadSlot { consumer, access, .. } = self;
        // The claim on the slot ends before the slot is handed back.
        #[allow(clippy::drop_non_drop)] // a loom guard under cfg(loom)
        drop(access);
        consumer.head += 1;
        consumer.ring.ctrl().head.store(consumer.head, Ordering::Release);
    }
}

impl RingPtrs {
    /// The ring at `ctrl`, its consumer sleeping on `doorbell` (None: the
    /// ring's own, in its control block).
    ///
    /// # Safety
    /// `ctrl` must point to a `RingControl` followed (at `slots`) by
    /// `shape.capacity * shape.stride()` bytes, all valid for reads and writes for
    /// as long as `owner` lives. `doorbell`, if given, must be valid as long
    /// as `owner` lives too.
    pub(crate) unsafe fn new(
        ctrl: NonNull<RingControl>,
        slots: NonNull<u8>,
        doorbell: Option<NonNull<Doorbell>>,
        shape: RingShape,
        owner: Owner,
    ) -> Self {
        // SAFETY: the caller's contract makes `ctrl` valid.
        let own = unsafe { ctrl.as_ref() }.own_doorbell();
        RingPtrs {
            ctrl,
            slots,
            doorbell: doorbell.unwrap_or(own),
            shape,
            _owner: owner,
            #[cfg(loom)]
            tracker: Arc::new((0..shape.capacity).map(|_| loom::cell::UnsafeCell::new(())).collect()),
        }
    }

    /// Claims slot `position` for writing until the token is dropped (loom
    /// checks that no read of the slot overlaps the claim).
    fn write_access(&self, position: u64) -> WriteAccess {
        #[cfg(loom)]
        {
            let index = (position % self.shape.capacity as u64) as usize;
            self.tracker[index].get_mut()
        }
        #[cfg(not(loom))]
        {
            let _ = position;
            Claim
        }
    }

    /// Claims slot `position` for reading until the token is dropped (loom
    /// checks that no write of the slot overlaps the claim).
    fn read_access(&self, position: u64) -> ReadAccess {
        #[cfg(loom)]
        {
            let index = (position % self.shape.capacity as u64) as usize;
            self.tracker[index].get()
        }
        #[cfg(not(loom))]
        {
            let _ = position;
            Claim
        }
    }
}

/// A claim on a slot, tracked by loom; nothing at run time (not `Copy`, so
/// that dropping one marks where the claim ends).
#[cfg(not(loom))]
struct Claim;
#[cfg(loom)]
type WriteAccess = loom::cell::MutPtr<()>;
#[cfg(not(loom))]
type WriteAccess = Claim;
#[cfg(loom)]
type ReadAccess = loom::cell::ConstPtr<()>;
#[cfg(not(loom))]
type ReadAccess = Claim;

pub(crate) mod shared {
    //! Copies between this process's memory and ring memory that the peer may
    //! write at any moment. Ring memory is never reached through a reference
    //! or a plain slice copy: bulk bytes go through volatile loads and stores
    //! (16 bytes at a time where aligned), the slot's length word through an
    //! atomic. Both are what Rust allows for memory outside its own
    //! allocations that something outside the program may change meanwhile
    //! (the mapping of a memfd another process writes): a peer writing while
    //! we read can only hand us a mix of old and new bytes, which the
    //! reader's validation of its copy catches, never undefined behaviour.
    //! Within this process the ring protocol orders every access to a slot
    //! (the positions' Release/Acquire: happens-before, never concurrent), so
    //! the same holds where both endpoints live here (tests, the loom model).
    use std::ptr;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// The widest plain load/store the target always has.
    #[cfg(target_arch = "x86_64")]
    type Wide = std::arch::x86_64::__m128i;
    #[cfg(not(target_arch = "x86_64"))]
    type Wide = u64;
    const WIDE: usize = std::mem::size_of::<Wide>();

    /// Stores `bytes` at `dst`, in order.
    ///
    /// # Safety
    /// `dst .. dst + bytes.len()` is valid for writes, and reached only
    /// through this module, for the duration of the call.
    pub(crate) unsafe fn store_bytes(dst: *mut u8, bytes: &[u8]) {
        let n = bytes.len();
        let src = bytes.as_ptr();
        let mut i = 0;
        // SAFETY: (all three loops) every address is inside the caller's
        // span; `Wide` stores are made only at multiples of its alignment
        // (its size); the source reads are inside `bytes`, unaligned.
        unsafe {
            while i < n && (dst as usize + i) % WIDE != 0 {
                ptr::write_volatile(dst.add(i), bytes[i]);
                i += 1;
            }
            while i + WIDE <= n {
                let word = ptr::read_unaligned(src.add(i).cast::<Wide>());
                ptr::write_volatile(dst.add(i).cast::<Wide>(), word);
                i += WIDE;
            }
            while i < n {
                ptr::write_volatile(dst.add(i), bytes[i]);
                i += 1;
            }
        }
    }

    /// Loads `out.len()` bytes from `src` into `out`.
    ///
    /// # Safety
    /// `src .. src + out.len()` is valid for reads, and reached only through
    /// this module, for the duration of the call.
    pub(super) unsafe fn load_bytes(src: *const u8, out: &mut [u8]) {
        let n = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        // SAFETY: as in store_bytes, the other way round (the unaligned
        // writes are inside `out`).
        unsafe {
            while i < n && (src as usize + i) % WIDE != 0 {
                *dst.add(i) = ptr::read_volatile(src.add(i));
                i += 1;
            }
            while i + WIDE <= n {
                let word = ptr::read_volatile(src.add(i).cast::<Wide>());
                ptr::write_unaligned(dst.add(i).cast::<Wide>(), word);
                i += WIDE;
            }
            while i < n {
                *dst.add(i) = ptr::read_volatile(src.add(i));
                i += 1;
            }
        }
    }

    /// Stores `values` at `dst` as little-endian f32s.
    ///
    /// # Safety
    /// As for [`store_bytes`], for `4 * values.len()` bytes.
    pub(super) unsafe fn store_f32s(dst: *mut u8, values: &[f32]) {
        #[cfg(target_endian = "little")]
        {
            // SAFETY: an f32 is 4 bytes with no padding, in memory exactly as
            // its little-endian encoding; the view lives for this call only.
            let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 4) };
            // SAFETY: the caller's contract.
            unsafe { store_bytes(dst, bytes) }
        }
        #[cfg(not(target_endian = "little"))]
        for (i, v) in values.iter().enumerate() {
            // SAFETY: inside the caller's span.
            unsafe { store_bytes(dst.add(4 * i), &v.to_le_bytes()) };
        }
    }

    /// Loads `out.len()` little-endian f32s from `src`.
    ///
    /// # Safety
    /// As for [`load_bytes`], for `4 * out.len()` bytes.
    pub(super) unsafe fn load_f32s(src: *const u8, out: &mut [f32]) {
        #[cfg(target_endian = "little")]
        {
            // SAFETY: every bit pattern is a valid f32, and the little-endian
            // encoding is its memory layout; the view lives for this call only.
            let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len() * 4) };
            // SAFETY: the caller's contract.
            unsafe { load_bytes(src, bytes) }
        }
        #[cfg(not(target_endian = "little"))]
        for (i, v) in out.iter_mut().enumerate() {
            let mut bytes = [0u8; 4];
            // SAFETY: inside the caller's span.
            unsafe { load_bytes(src.add(4 * i), &mut bytes) };
            *v = f32::from_le_bytes(bytes);
        }
    }

    /// Stores a slot's length word (slots are 64-byte aligned).
    ///
    /// # Safety
    /// `dst` is 4-aligned and valid for a 4-byte write, reached only as an atomic.
    pub(super) unsafe fn store_len(dst: *mut u8, len: u32) {
        // SAFETY: the caller's contract.
        unsafe { AtomicU32::from_ptr(dst.cast()).store(len.to_le(), Relaxed) }
    }

    /// Loads a slot's length word.
    ///
    /// # Safety
    /// As for [`store_len`], for reads.
    pub(super) unsafe fn load_len(src: *const u8) -> u32 {
        // SAFETY: the caller's contract.
        u32::from_le(unsafe { AtomicU32::from_ptr(src.cast_mut().cast()).load(Relaxed) })
    }
}

/// A ring on the heap, for the loom model only: loom's atomics cannot live in a
/// shared mapping, and in-process hand-offs elsewhere use rtrb.
#[cfg(loom)]
pub fn loom_ring(shape: RingShape) -> (Producer, Consumer) {
    struct HeapRing {
        ctrl: Box<RingControl>,
        slots: Box<[std::cell::UnsafeCell<u8>]>,
    }
    // SAFETY: only reached through the endpoints, which follow the ring protocol.
    unsafe impl Send for HeapRing {}
    // SAFETY: as above.
    unsafe impl Sync for HeapRing {}
    let slots: Box<[std::cell::UnsafeCell<u8>]> =
        (0..shape.capacity * shape.stride()).map(|_| std::cell::UnsafeCell::new(0)).collect();
    let heap = Arc::new(HeapRing { ctrl: Box::new(RingControl::new()), slots });
    let ctrl = NonNull::from(&*heap.ctrl);
    let slots = NonNull::new(heap.slots.as_ptr() as *mut u8).expect("non-null");
    let owner: Owner = heap;
    // SAFETY: the heap ring outlives both endpoints through `owner`, and we make
    // exactly one of each.
    unsafe {
        let producer = Producer::new(RingPtrs::new(ctrl, slots, None, shape, owner.clone()));
        let consumer = Consumer::new(RingPtrs::new(ctrl, slots, None, shape, owner));
        (producer, consumer)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    const SHAPE: RingShape = RingShape { capacity: 2, payload: 8 };

    /// Runs `op` until the ring has room for it, yielding to the model's
    /// other thread meanwhile.
    fn when_room<T>(mut op: impl FnMut() -> Result<T, PushError>) -> T {
        loop {
            match op() {
                Ok(done) => return done,
                Err(PushError::Full) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    /// Runs `op` until the ring has a message for it, yielding meanwhile.
    fn when_message<T>(mut op: impl FnMut() -> Result<T, PopError>) -> T {
        loop {
            match op() {
                Ok(done) => return done,
                Err(PopError::Empty) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    /// The next free slot, once there is one.
    fn reserve(producer: &mut Producer) -> WriteSlot<'_> {
        while producer.free_slots() == 0 {
            assert_eq!(producer.fault(), None);
            thread::yield_now();
        }
        producer.reserve().unwrap()
    }

    /// The oldest message, once there is one.
    fn read(consumer: &mut Consumer) -> ReadSlot<'_> {
        while !consumer.has_message() {
            assert_eq!(consumer.fault(), None);
            thread::yield_now();
        }
        consumer.read().unwrap()
    }

    /// Three messages through a two-slot ring: in order, intact, no data race
    /// on any slot, whatever the interleaving.
    #[test]
    fn messages_arrive_in_order_without_races() {
        loom::model(|| {
            let (mut producer, mut consumer) = loom_ring(SHAPE);
            let writer = thread::spawn(move || {
                for i in 0..3u8 {
                    when_room(|| producer.try_push(&[i; 3]));
                }
            });
            let mut out = [0u8; 8];
            for i in 0..3u8 {
                let len = when_message(|| consumer.try_pop(&mut out));
                assert_eq!(&out[..len], &[i; 3]);
            }
            writer.join().unwrap();
        });
    }

    /// The same through the in-place API: a writer that reserves, writes and
    /// commits (once dropping a reservation uncommitted), a reader that
    /// looks at each message through a guard before releasing it (once
    /// dropping the guard and reading the message again). In order, intact,
    /// and no write to a slot overlaps a read of it, whatever the interleaving.
    #[test]
    fn in_place_messages_arrive_in_order_without_races() {
        loom::model(|| {
            let (mut producer, mut consumer) = loom_ring(SHAPE);
            let writer = thread::spawn(move || {
                for i in 0..3u8 {
                    if i == 1 {
                        // Dropped uncommitted: nothing published.
                        reserve(&mut producer).put_bytes(0, &[9, 9]);
                    }
                    let mut slot = reserve(&mut producer);
                    slot.put_bytes(0, &[i, i]);
                    slot.put_u32(2, u32::from(i) << 8);
                    slot.commit(6).unwrap();
                }
            });
            for i in 0..3u8 {
                // The first message is looked at twice: dropped unreleased
                // once, it stays.
                for look in 0..if i == 0 { 2 } else { 1 } {
                    let message = read(&mut consumer);
                    assert_eq!(message.len(), 6);
                    let mut head = [0u8; 2];
                    assert!(message.copy_to(0, &mut head));
                    assert_eq!(head, [i, i]);
                    assert_eq!(message.u32_at(2), Some(u32::from(i) << 8));
                    assert_eq!(message.u32_at(3), None, "past the message");
                    if look == 0 && i == 0 {
                        continue;
                    }
                    message.release();
                }
            }
            writer.join().unwrap();
        });
    }

    /// A writer never reserves a slot whose message the reader still holds
    /// through a guard (one slot: the reservation must wait for the release).
    #[test]
    fn a_slot_being_read_is_never_reserved() {
        loom::model(|| {
            let (mut producer, mut consumer) = loom_ring(RingShape { capacity: 1, payload: 8 });
            let writer = thread::spawn(move || {
                for sent in 0..2u8 {
                    let mut slot = reserve(&mut producer);
                    slot.put_f32s(0, &[f32::from(sent)]);
                    slot.commit(4).unwrap();
                }
            });
            let mut got = Vec::new();
            while got.len() < 2 {
                let message = read(&mut consumer);
                let mut value = [0f32];
                assert!(message.copy_f32s_to(0, &mut value));
                got.push(value[0]);
                message.release();
            }
            assert_eq!(got, vec![0.0, 1.0]);
            writer.join().unwrap();
        });
    }

    /// A consumer that goes to sleep is always woken: no lost wake-up, whatever
    /// the interleaving of its sleep hand-shake with the producer's push.
    #[test]
    fn sleeping_consumer_is_always_woken() {
        loom::model(|| {
            let (mut producer, mut consumer) = loom_ring(SHAPE);
            let writer = thread::spawn(move || {
                producer.try_push(&[7]).unwrap();
                producer.try_push(&[8]).unwrap();
            });
            let mut out = [0u8; 8];
            for expected in [7u8, 8] {
                let len = consumer.pop_wait(&mut out, 0, None).unwrap();
                assert_eq!(&out[..len], &[expected]);
            }
            writer.join().unwrap();
        });
    }

    /// The producer sees a full ring and never overwrites an unread slot.
    #[test]
    fn full_ring_is_never_overwritten() {
        loom::model(|| {
            let (mut producer, mut consumer) = loom_ring(RingShape { capacity: 1, payload: 8 });
            let writer = thread::spawn(move || {
                for sent in 0..2u8 {
                    when_room(|| producer.try_push(&[sent]));
                }
            });
            let mut out = [0u8; 8];
            let mut got = Vec::new();
            while got.len() < 2 {
                let len = when_message(|| consumer.try_pop(&mut out));
                got.push(out[..len].to_vec());
            }
            assert_eq!(got, vec![vec![0], vec![1]]);
            writer.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod watch_tests {
    //! Sleeping on many rings at once, as the job pool's waiter does.
    use super::*;
    use crate::shm::region::{Region, Wake};

    const SHAPE: RingShape = RingShape { capacity: 4, payload: 8 };

    #[test]
    fn a_sleeper_on_many_rings_wakes_for_whichever_gets_a_message() {
        let mut region = Region::create_with(&[(SHAPE, Wake::Own), (SHAPE, Wake::Own), (SHAPE, Wake::Own)], 1).unwrap();
        let mut consumers: Vec<Consumer> = (0..3).map(|i| region.consumer(i).unwrap()).collect();
        let watches: Vec<RingWatch> = consumers.iter().map(Consumer::watch).collect();
        // Nothing waiting: the sleep ends at its deadline, saying so.
        let began = Instant::now();
        assert!(!sleep_until_any(&watches, Some(Instant::now() + Duration::from_millis(20))));
        assert!(began.elapsed() >= Duration::from_millis(20));
        assert!(!watches.iter().any(RingWatch::looks_ready));
        // A message on the last ring, pushed by another thread while we sleep.
        let mut producer = region.producer(2).unwrap();
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            producer.try_push(&[9]).unwrap();
            producer
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sleep_until_any(&watches, Some(deadline)) {
            assert!(Instant::now() < deadline, "never woken");
        }
        let _producer = pusher.join().unwrap();
        assert!(watches[2].looks_ready() && !watches[0].looks_ready());
        let mut out = [0u8; 8];
        assert_eq!(consumers[2].try_pop(&mut out), Ok(1));
        assert!(!watches[2].looks_ready(), "popped");
        // The watches keep the memory mapped after the region and endpoints go.
        drop(consumers);
        drop(region);
        assert!(!sleep_until_any(&watches, Some(Instant::now())));
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::drop_non_drop)] // guards dropped on purpose, to abandon them
mod proptests {
    //! Whatever a hostile peer writes into a ring's shared words and slots, at
    //! any moment, both endpoints hand back valid data or an error: no panic,
    //! no access outside the ring, and a faulted endpoint stays faulted. While
    //! nobody has scribbled, the ring is exactly a bounded FIFO.
    use std::collections::VecDeque;
    use std::mem::offset_of;

    use proptest::prelude::*;

    use super::*;
    use crate::shm::region::Region;

    /// Bytes around the ring under test that nothing may touch.
    const GUARD: RingShape = RingShape { capacity: 2, payload: 56 };
    const GUARD_BYTE: u8 = 0xA5;
    const TAIL: usize = offset_of!(RingControl, tail);
    const HEAD: usize = offset_of!(RingControl, head);
    const ASLEEP: usize = offset_of!(RingControl, wake) + crate::shm::doorbell::ASLEEP_OFFSET;

    /// A position a hostile peer writes: absolute, or relative to the word's current value.
    #[derive(Clone, Debug)]
    enum Pos {
        Abs(u64),
        Rel(i8),
    }

    fn pos() -> impl Strategy<Value = Pos> {
        let extreme =
            prop_oneof![any::<u64>(), 0..64u64, u64::MAX - 64..=u64::MAX, (1u64 << 63) - 32..(1u64 << 63) + 32,];
        prop_oneof![3 => any::<i8>().prop_map(Pos::Rel), 1 => extreme.prop_map(Pos::Abs)]
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The producer pushes a message of this many bytes.
        Push(usize),
        /// The consumer pops into a buffer of this many bytes.
        Pop(usize),
        /// The producer reserves a slot, writes a message of this many bytes
        /// in place (as a u32, f32s and bytes), and commits it; or drops the
        /// reservation (`abandon`); or also writes past the slot (`overflow`).
        PushInPlace {
            len: usize,
            abandon: bool,
            overflow: bool,
        },
        /// The consumer reads the oldest message in place, copies it out at
        /// `split`, and releases it; or drops the guard (`keep`).
        ReadInPlace {
            split: usize,
            keep: bool,
        },
        HasMessage,
        FreeSlots,
        /// The peer overwrites the tail, or the head, word.
        Tail(Pos),
        Head(Pos),
        /// The peer overwrites a slot's length prefix.
        SlotLength(usize, u32),
        /// The peer overwrites bytes somewhere in a slot.
        SlotBytes(usize, usize, Vec<u8>),
        /// The peer claims to be asleep (so the producer rings a futex).
        Asleep(u32),
    }

    fn op(payload: usize) -> impl Strategy<Value = Op> {
        let len = 0..=payload + 8;
        prop_oneof![
            6 => len.clone().prop_map(Op::Push),
            6 => len.clone().prop_map(Op::Pop),
            4 => (len, prop::bool::weighted(0.2), prop::bool::weighted(0.1))
                .prop_map(|(len, abandon, overflow)| Op::PushInPlace { len, abandon, overflow }),
            4 => (0..=payload + 8, prop::bool::weighted(0.2)).prop_map(|(split, keep)| Op::ReadInPlace { split, keep }),
            1 => Just(Op::HasMessage),
            1 => Just(Op::FreeSlots),
            1 => pos().prop_map(Op::Tail),
            1 => pos().prop_map(Op::Head),
            1 => (any::<usize>(), prop_oneof![Just(0u32), Just(payload as u32), Just(payload as u32 + 1), any::<u32>()])
                .prop_map(|(slot, len)| Op::SlotLength(slot, len)),
            1 => (any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(slot, at, bytes)| Op::SlotBytes(slot, at, bytes)),
            1 => any::<u32>().prop_map(Op::Asleep),
        ]
    }

    /// A ring shape, the positions a peer leaves before the endpoints are
    /// made, and what happens next. One case in four has no hostile peer.
    fn case() -> impl Strategy<Value = (RingShape, Option<Pos>, Option<Pos>, Vec<Op>)> {
        (1..=6usize, 0..=200usize, prop::bool::weighted(0.75)).prop_flat_map(|(capacity, payload, hostile)| {
            let start = move || prop::option::weighted(0.5, pos()).prop_map(move |p| p.filter(|_| hostile));
            let ops = prop::collection::vec(op(payload), 1..80).prop_map(move |ops| {
                let peer = |op: &Op| matches!(op, Op::Tail(_) | Op::Head(_) | Op::SlotLength(..) | Op::SlotBytes(..));
                ops.into_iter().filter(|op| hostile || !peer(op)).collect::<Vec<_>>()
            });
            (Just(RingShape { capacity, payload }), start(), start(), ops)
        })
    }

    fn ring(shape: RingShape) -> Region {
        Region::create(&[GUARD, shape, GUARD]).unwrap()
    }

    /// Regression: a consumer made over a head of u64::MAX (left by the peer)
    /// overflowed on its first pop; a producer over a tail of u64::MAX on its
    /// first push. Both now start faulted.
    #[test]
    fn endpoints_made_over_hostile_positions_start_faulted() {
        let shape = RingShape { capacity: 3, payload: 8 };
        let mut region = ring(shape);
        let at = region.ring_offset(1);
        region.scribble(at + TAIL, &u64::MAX.to_le_bytes());
        region.scribble(at + HEAD, &u64::MAX.to_le_bytes());
        let mut tx = region.producer(1).unwrap();
        let mut rx = region.consumer(1).unwrap();
        assert!(matches!(tx.try_push(&[1]), Err(PushError::Faulted(RingFault::TailOutOfRange { seen: u64::MAX, .. }))));
        assert!(matches!(rx.try_pop(&mut [0; 8]), Err(PopError::Faulted(RingFault::HeadOutOfRange { .. }))));
        // Anywhere up to 2^63 is a position a peer could have reached: resumed.
        let mut region = ring(shape);
        let at = region.ring_offset(1);
        region.scribble(at + TAIL, &MAX_START.to_le_bytes());
        region.scribble(at + HEAD, &MAX_START.to_le_bytes());
        let mut tx = region.producer(1).unwrap();
        let mut rx = region.consumer(1).unwrap();
        tx.try_push(&[7]).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(rx.try_pop(&mut out), Ok(1));
        assert_eq!(out[0], 7);
    }

    /// Regression: `free_slots` reported room in the very call that faulted.
    #[test]
    fn a_producer_that_faults_offers_no_room() {
        let mut region = ring(RingShape { capacity: 1, payload: 0 });
        let mut tx = region.producer(1).unwrap();
        region.scribble(region.ring_offset(1) + HEAD, &u64::MAX.to_le_bytes());
        assert_eq!(tx.free_slots(), 0);
        assert!(tx.fault().is_some());
    }

    struct Peer<'a> {
        region: &'a Region,
        ring: usize,
    }

    impl Peer<'_> {
        fn word(&self, at: usize) -> u64 {
            u64::from_le_bytes(self.region.peek(self.ring + at, 8).try_into().unwrap())
        }

        fn write(&self, at: usize, pos: &Pos) {
            let value = match *pos {
                Pos::Abs(v) => v,
                Pos::Rel(d) => self.word(at).wrapping_add_signed(d as i64),
            };
            self.region.scribble(self.ring + at, &value.to_le_bytes());
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(256))]

        #[test]
        fn hostile_positions_and_slots_never_break_an_endpoint((shape, start_tail, start_head, ops) in case()) {
            let mut region = ring(shape);
            for guard in [0, 2] {
                let bytes = region.ring_shape(guard).unwrap().bytes();
                region.scribble(region.ring_offset(guard), &vec![GUARD_BYTE; bytes]);
            }
            let peer = Peer { region: &region, ring: region.ring_offset(1) };
            // Positions found when the endpoints are made are the peer's to write too.
            if let Some(p) = &start_tail {
                peer.write(TAIL, p);
            }
            if let Some(p) = &start_head {
                peer.write(HEAD, p);
            }
            let mut scribbled = start_tail.is_some() || start_head.is_some();
            let mut tx = region.producer(1).unwrap();
            let mut rx = region.consumer(1).unwrap();
            let peer = Peer { region: &region, ring: region.ring_offset(1) };
            let (capacity, payload, stride) = (shape.capacity, shape.payload, shape.stride());
            let mut fifo: VecDeque<Vec<u8>> = VecDeque::new();
            let (mut tx_fault, mut rx_fault) = (tx.fault(), rx.fault());
            for (n, op) in ops.iter().enumerate() {
                match op {
                    Op::Push(len) => {
                        let msg: Vec<u8> = (0..*len).map(|i| (n + i) as u8).collect();
                        let result = tx.try_push(&msg);
                        if let Some(fault) = tx_fault {
                            prop_assert_eq!(result, Err(PushError::Faulted(fault)), "faults are sticky");
                        }
                        match result {
                            Ok(()) => {
                                prop_assert!(*len <= payload);
                                if !scribbled {
                                    prop_assert!(fifo.len() < capacity);
                                    fifo.push_back(msg);
                                }
                            }
                            Err(PushError::Full) => prop_assert!(scribbled || fifo.len() == capacity),
                            Err(PushError::TooLarge { len: l, max }) => {
                                prop_assert!(l == *len && max == payload && l > payload);
                            }
                            Err(PushError::Faulted(fault)) => {
                                prop_assert!(scribbled, "faulted with no hostile write: {:?}", fault);
                                tx_fault = Some(fault);
                            }
                        }
                        prop_assert_eq!(tx.fault(), tx_fault);
                    }
                    Op::Pop(len) => {
                        let mut out = vec![0xEEu8; *len];
                        let result = rx.try_pop(&mut out);
                        if let Some(fault) = rx_fault {
                            prop_assert_eq!(result, Err(PopError::Faulted(fault)), "faults are sticky");
                        }
                        let written = match result {
                            Ok(got) => {
                                prop_assert!(got <= payload && got <= *len);
                                if !scribbled {
                                    let expected = fifo.pop_front();
                                    prop_assert_eq!(Some(&out[..got]), expected.as_deref());
                                }
                                got
                            }
                            Err(PopError::Empty) => {
                                prop_assert!(scribbled || fifo.is_empty());
                                0
                            }
                            Err(PopError::BufferTooSmall { needed }) => {
                                prop_assert!(needed > *len && needed <= payload);
                                prop_assert!(scribbled || fifo.front().map(Vec::len) == Some(needed));
                                0
                            }
                            Err(PopError::Faulted(fault)) => {
                                prop_assert!(scribbled, "faulted with no hostile write: {:?}", fault);
                                rx_fault = Some(fault);
                                0
                            }
                        };
                        prop_assert!(out[written..].iter().all(|&b| b == 0xEE), "wrote past the message");
                        prop_assert_eq!(rx.fault(), rx_fault);
                    }
                    Op::PushInPlace { len, abandon, overflow } => {
                        let msg: Vec<u8> = (0..*len).map(|i| (n + i) as u8).collect();
                        let result = match tx.reserve() {
                            Ok(mut slot) => {
                                prop_assert_eq!(slot.capacity(), payload);
                                // A u32, then f32s, then the rest as bytes.
                                let word = msg.len().min(4);
                                if word == 4 {
                                    slot.put_u32(0, u32::from_le_bytes(msg[..4].try_into().unwrap()));
                                } else {
                                    slot.put_bytes(0, &msg[..word]);
                                }
                                let floats: Vec<f32> = msg[word..]
                                    .chunks_exact(4)
                                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                                    .collect();
                                slot.put_f32s(word, &floats);
                                let at = word + floats.len() * 4;
                                slot.put_bytes(at, &msg[at..]);
                                if *overflow {
                                    slot.put_bytes(payload, &[1]);
                                }
                                if *abandon {
                                    drop(slot);
                                    continue;
                                }
                                slot.commit(*len)
                            }
                            Err(e) => Err(e),
                        };
                        if let Some(fault) = tx_fault {
                            prop_assert_eq!(result, Err(PushError::Faulted(fault)), "faults are sticky");
                        }
                        match result {
                            Ok(()) => {
                                prop_assert!(*len <= payload && !*overflow);
                                if !scribbled {
                                    prop_assert!(fifo.len() < capacity);
                                    fifo.push_back(msg);
                                }
                            }
                            Err(PushError::Full) => prop_assert!(scribbled || fifo.len() == capacity),
                            Err(PushError::TooLarge { max, .. }) => {
                                prop_assert!(max == payload && (*len > payload || *overflow));
                            }
                            Err(PushError::Faulted(fault)) => {
                                prop_assert!(scribbled, "faulted with no hostile write: {:?}", fault);
                                tx_fault = Some(fault);
                            }
                        }
                        prop_assert_eq!(tx.fault(), tx_fault);
                    }
                    Op::ReadInPlace { split, keep } => {
                        let result = rx.read();
                        if let Some(fault) = rx_fault {
                            prop_assert!(matches!(result, Err(PopError::Faulted(f)) if f == fault), "faults are sticky");
                        }
                        match result {
                            Ok(message) => {
                                let got = message.len();
                                prop_assert!(got <= payload);
                                let mut out = vec![0xEEu8; got];
                                let split = (*split).min(got);
                                prop_assert!(message.copy_to(0, &mut out[..split]));
                                prop_assert!(message.copy_to(split, &mut out[split..]));
                                prop_assert!(!message.copy_to(got, &mut [0u8]), "read past the message");
                                prop_assert!(!message.copy_to(usize::MAX, &mut [0u8]), "offset overflow");
                                prop_assert_eq!(message.u32_at(got.saturating_sub(4)).is_some(), got >= 4);
                                if !scribbled {
                                    prop_assert_eq!(Some(&out), fifo.front());
                                }
                                if *keep {
                                    drop(message);
                                } else {
                                    message.release();
                                    if !scribbled {
                                        fifo.pop_front();
                                    }
                                }
                            }
                            Err(PopError::Empty) => prop_assert!(scribbled || fifo.is_empty()),
                            Err(PopError::BufferTooSmall { .. }) => prop_assert!(false, "read has no buffer"),
                            Err(PopError::Faulted(fault)) => {
                                prop_assert!(scribbled, "faulted with no hostile write: {:?}", fault);
                                rx_fault = Some(fault);
                            }
                        }
                        prop_assert_eq!(rx.fault(), rx_fault);
                    }
                    Op::HasMessage => {
                        let has = rx.has_message();
                        rx_fault = rx_fault.or(rx.fault());
                        prop_assert!(!(has && rx_fault.is_some()));
                        prop_assert!(scribbled || has != fifo.is_empty());
                    }
                    Op::FreeSlots => {
                        let free = tx.free_slots();
                        tx_fault = tx_fault.or(tx.fault());
                        prop_assert!(free <= capacity);
                        prop_assert!(tx_fault.is_none() || free == 0);
                        prop_assert!(scribbled || free == capacity - fifo.len());
                    }
                    Op::Tail(p) => {
                        peer.write(TAIL, p);
                        scribbled = true;
                    }
                    Op::Head(p) => {
                        peer.write(HEAD, p);
                        scribbled = true;
                    }
                    Op::SlotLength(slot, len) => {
                        let at = RingControl::BYTES + (slot % capacity) * stride;
                        region.scribble(peer.ring + at, &len.to_le_bytes());
                        scribbled = true;
                    }
                    Op::SlotBytes(slot, offset, bytes) => {
                        let offset = offset % (stride - bytes.len().min(stride));
                        let at = RingControl::BYTES + (slot % capacity) * stride + offset;
                        region.scribble(peer.ring + at, &bytes[..bytes.len().min(stride)]);
                        scribbled = true;
                    }
                    Op::Asleep(value) => region.scribble(peer.ring + ASLEEP, &value.to_le_bytes()),
                }
            }
            for guard in [0, 2] {
                let bytes = region.ring_shape(guard).unwrap().bytes();
                let seen = region.peek(region.ring_offset(guard), bytes);
                prop_assert!(seen.iter().all(|&b| b == GUARD_BYTE), "ring {} was written", guard);
            }
        }
    }
}
