//! The shared-memory region one worker process shares with its host: an
//! anonymous memfd holding a validated header, the worker's status words and
//! its rings.
//!
//! # Isolation
//!
//! Each worker gets a region of its own (DESIGN.md §2 says one per host
//! process; we go one step further): a worker that scribbles over its memory can
//! only garble its own rings, never those of tracks on other workers. The memfd
//! has no name under /dev/shm, is sealed against resizing (a peer that could
//! shrink it would make our next access SIGBUS), and reaches the worker only by
//! inheritance of one descriptor.
//!
//! # Trust
//!
//! The host writes the header and keeps its own copy of the layout; it never
//! reads offsets or sizes back. The worker copies the header out, validates
//! every field (magic, version, sizes, bounds, overlaps) and only then builds
//! endpoints from its copy. The status words and ring positions stay shared and
//! are validated where they are read (see `ring`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::ring::{Consumer, Doorbell, Producer, RingControl, RingShape};

/// First bytes of every region.
pub const MAGIC: [u8; 8] = *b"OUTBOARD";
/// Bumped whenever the layout or a message format changes.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most rings one region can hold.
pub const MAX_RINGS: usize = 32;
/// Where the worker status block sits.
const STATUS_OFFSET: usize = 2048;
/// Where the first ring may start: header and status fit in one page.
const RINGS_OFFSET: usize = 4096;
/// Largest region a worker accepts (a sanity bound on what a header may claim).
pub const MAX_REGION_BYTES: u64 = 1 << 32;
/// Rings start on this boundary (CachePadded's alignment).
const RING_ALIGN: u64 = 128;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RingDescriptor {
    offset: u64,
    capacity: u32,
    payload: u32,
    /// Which doorbell the ring's consumer sleeps on: [`Wake`] as a number.
    wake: u32,
    _reserved: u32,
}

/// Which doorbell a ring's consumer sleeps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The ring's own: its consumer waits on this ring alone.
    Own = 0,
    /// The region's worker doorbell: the worker waits on all such rings at once.
    Worker = 1,
}

/// The header as it sits at offset 0. Plain integers only: any bytes a peer
/// writes are a valid value of this type, which is what lets us copy it out
/// before validating it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Header {
    magic: [u8; 8],
    version: u32,
    header_bytes: u32,
    region_bytes: u64,
    control_bytes: u32,
    ring_count: u32,
    rings: [RingDescriptor; MAX_RINGS],
}

const _: () = assert!(std::mem::size_of::<Header>() <= STATUS_OFFSET);
const _: () = assert!(STATUS_OFFSET + std::mem::size_of::<WorkerStatus>() <= RINGS_OFFSET);

/// Words the worker publishes about itself. Written by the worker, read by the
/// host's supervisor; every field is an atomic and any value is survivable.
#[repr(C)]
pub struct WorkerStatus {
    /// Which incarnation of the worker this region is serving. The host sets it
    /// before spawning; a worker refuses a region whose generation is not the one
    /// it was started for.
    pub generation: CachePadded<AtomicU32>,
    /// Bumped by the worker at least every heartbeat interval while it lives.
    pub heartbeat: CachePadded<AtomicU64>,
    /// The worker's process id, as the worker claims it (informational only).
    pub pid: AtomicU32,
    /// Where the worker sleeps when every ring it reads is empty.
    pub doorbell: CachePadded<Doorbell>,
}

/// Why a region could not be attached.
#[derive(Debug)]
pub enum AttachError {
    Io(io::Error),
    Invalid(String),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Io(e) => write!(f, "cannot map the shared region: {e}"),
            AttachError::Invalid(why) => write!(f, "invalid shared region: {why}"),
        }
    }
}

impl std::error::Error for AttachError {}

impl From<io::Error> for AttachError {
    fn from(e: io::Error) -> Self {
        AttachError::Io(e)
    }
}

/// A mapping of the whole memfd; unmapped when the last endpoint is gone.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// atomics or protocol-ordered copies (see `ring`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned, and every endpoint
        // holds an Arc of this mapping, so none is left to use it.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl Mapping {
    fn map(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of `len` bytes of the memfd; nothing
        // else in this process aliases it yet.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)?
        };
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { base, len, fd })
    }

    fn at(&self, offset: usize) -> NonNull<u8> {
        assert!(offset < self.len);
        // SAFETY: offset < len, so the pointer stays inside the mapping.
        unsafe { self.base.add(offset) }
    }
}

/// Where one ring lives and what shape it has, as the trusted side knows it.
#[derive(Clone, Copy, Debug)]
struct RingPlace {
    offset: usize,
    shape: RingShape,
    wake: Wake,
}

/// One worker's shared region, mapped in this process.
pub struct Region {
    mapping: Arc<Mapping>,
    rings: Vec<RingPlace>,
    producer_taken: Vec<bool>,
    consumer_taken: Vec<bool>,
}

impl Region {
    /// Creates a region holding rings of the given shapes, each with its own
    /// doorbell, at generation 1.
    pub fn create(shapes: &[RingShape]) -> io::Result<Region> {
        let rings: Vec<(RingShape, Wake)> = shapes.iter().map(|&s| (s, Wake::Own)).collect();
        Region::create_with(&rings, 1)
    }

    /// Creates a region holding the given rings, at the given generation.
    pub fn create_with(specs: &[(RingShape, Wake)], generation: u32) -> io::Result<Region> {
        if specs.len() > MAX_RINGS || specs.iter().any(|(s, _)| !s.is_valid()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring shapes out of range"));
        }
        let mut rings = Vec::with_capacity(specs.len());
        let mut offset = RINGS_OFFSET;
        for &(shape, wake) in specs {
            rings.push(RingPlace { offset, shape, wake });
            offset += shape.bytes().div_ceil(RING_ALIGN as usize) * RING_ALIGN as usize;
        }
        let len = offset;
        let fd = rustix::fs::memfd_create("outboard-region", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let mapping = Mapping::map(fd, len)?;
        let mut header = Header {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            header_bytes: std::mem::size_of::<Header>() as u32,
            region_bytes: len as u64,
            control_bytes: RingControl::BYTES as u32,
            ring_count: rings.len() as u32,
            rings: [RingDescriptor::default(); MAX_RINGS],
        };
        for (descriptor, place) in header.rings.iter_mut().zip(&rings) {
            *descriptor = RingDescriptor {
                offset: place.offset as u64,
                capacity: place.shape.capacity as u32,
                payload: place.shape.payload as u32,
                wake: place.wake as u32,
                _reserved: 0,
            };
        }
        // SAFETY: the mapping is fresh (zero-filled by ftruncate), at least
        // RINGS_OFFSET bytes long and page-aligned; no peer has it yet.
        unsafe { mapping.base.as_ptr().cast::<Header>().write(header) };
        let region = Region::from_parts(mapping, rings);
        region.status().generation.store(generation, Ordering::Release);
        Ok(region)
    }

    /// Maps a region created by the host and validates its header.
    pub fn attach(fd: OwnedFd) -> Result<Region, AttachError> {
        let size = rustix::fs::fstat(&fd).map_err(io::Error::from)?.st_size;
        if size < RINGS_OFFSET as i64 || size as u64 > MAX_REGION_BYTES {
            return Err(AttachError::Invalid(format!("size {size} bytes")));
        }
        let mapping = Mapping::map(fd, size as usize)?;
        // SAFETY: the mapping holds at least RINGS_OFFSET bytes, more than a
        // Header; Header is plain integers, so any bytes are a valid value, and
        // read_volatile copies them out once whatever the peer does meanwhile.
        let header = unsafe { std::ptr::read_volatile(mapping.base.as_ptr().cast::<Header>()) };
        let rings = validate_header(&header, size as u64).map_err(AttachError::Invalid)?;
        Ok(Region::from_parts(mapping, rings))
    }

    fn from_parts(mapping: Mapping, rings: Vec<RingPlace>) -> Region {
        let n = rings.len();
        Region { mapping: Arc::new(mapping), rings, producer_taken: vec![false; n], consumer_taken: vec![false; n] }
    }

    /// The memfd, to hand to the worker at spawn.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mapping.fd.as_fd()
    }

    /// Arranges for `command`'s child to inherit this region's memfd, and only
    /// it, and to be killed when this process dies. Returns the descriptor
    /// number the child will find it under.
    pub fn pass_to_child(&self, command: &mut Command) -> RawFd {
        let fd = self.mapping.fd.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and makes
        // only async-signal-safe syscalls (fcntl, prctl), touching no memory of
        // the parent's but the integer `fd`.
        unsafe {
            command.pre_exec(move || {
                // Let exactly this descriptor survive exec (the parent's copy
                // keeps FD_CLOEXEC, so no other child inherits it).
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                // Die with the host: no orphaned workers.
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                Ok(())
            });
        }
        fd
    }

    /// Number of rings.
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// Shape of ring `index`.
    pub fn ring_shape(&self, index: usize) -> Option<RingShape> {
        self.rings.get(index).map(|p| p.shape)
    }

    /// The worker's status words.
    pub fn status(&self) -> &WorkerStatus {
        // SAFETY: STATUS_OFFSET + size_of WorkerStatus <= RINGS_OFFSET <= len,
        // the offset is 128-aligned in a page-aligned mapping, all fields are
        // atomics (any bytes valid, shared access sound), and the mapping lives
        // as long as `self`.
        unsafe { self.mapping.at(STATUS_OFFSET).cast::<WorkerStatus>().as_ref() }
    }

    /// Takes the producing end of ring `index` (once per region).
    pub fn producer(&mut self, index: usize) -> Option<Producer> {
        let place = *self.rings.get(index)?;
        if std::mem::replace(&mut self.producer_taken[index], true) {
            return None;
        }
        let (ctrl, slots, doorbell) = self.ring_ptrs(place);
        // SAFETY: `place` was laid out by `create` or validated by
        // `validate_header` to lie inside the mapping, 128-aligned, not
        // overlapping another ring; the doorbell is in the status page of the
        // same mapping; the mapping lives in `owner`; and the taken flag makes
        // this the ring's only producer in this process.
        Some(unsafe { Producer::new(ctrl, slots, doorbell, place.shape, self.mapping.clone()) })
    }

    /// Takes the consuming end of ring `index` (once per region).
    pub fn consumer(&mut self, index: usize) -> Option<Consumer> {
        let place = *self.rings.get(index)?;
        if std::mem::replace(&mut self.consumer_taken[index], true) {
            return None;
        }
        let (ctrl, slots, doorbell) = self.ring_ptrs(place);
        // SAFETY: as in `producer`.
        Some(unsafe { Consumer::new(ctrl, slots, doorbell, place.shape, self.mapping.clone()) })
    }

    fn ring_ptrs(&self, place: RingPlace) -> (NonNull<RingControl>, NonNull<u8>, Option<NonNull<Doorbell>>) {
        let doorbell = match place.wake {
            Wake::Own => None,
            Wake::Worker => Some(NonNull::from(&*self.status().doorbell)),
        };
        (self.mapping.at(place.offset).cast(), self.mapping.at(place.offset + RingControl::BYTES), doorbell)
    }

    /// Overwrites the header with raw bytes, as a hostile peer could. For tests.
    #[doc(hidden)]
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.mapping.len);
        // SAFETY: in bounds (checked above); racing other writers only garbles
        // bytes, which every reader validates.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mapping.at(offset).as_ptr(), bytes.len()) };
    }

    /// Byte offset of ring `index`'s control block, for tests that play a hostile peer.
    #[doc(hidden)]
    pub fn ring_offset(&self, index: usize) -> usize {
        self.rings[index].offset
    }
}

/// Checks every field of a header copied from a peer; returns the ring places.
fn validate_header(header: &Header, actual_bytes: u64) -> Result<Vec<RingPlace>, String> {
    if header.magic != MAGIC {
        return Err(format!("bad magic {:02x?}", header.magic));
    }
    if header.version != PROTOCOL_VERSION {
        return Err(format!("protocol version {} (this build speaks {PROTOCOL_VERSION})", header.version));
    }
    if header.header_bytes as usize != std::mem::size_of::<Header>() {
        return Err(format!("header of {} bytes (expected {})", header.header_bytes, std::mem::size_of::<Header>()));
    }
    if header.control_bytes as usize != RingControl::BYTES {
        return Err(format!("ring control of {} bytes (expected {})", header.control_bytes, RingControl::BYTES));
    }
    if header.region_bytes != actual_bytes {
        return Err(format!("header says {} bytes, the memfd has {actual_bytes}", header.region_bytes));
    }
    let count = header.ring_count as usize;
    if count > MAX_RINGS {
        return Err(format!("{count} rings (at most {MAX_RINGS})"));
    }
    let mut places = Vec::with_capacity(count);
    for (i, d) in header.rings[..count].iter().enumerate() {
        let shape = RingShape { capacity: d.capacity as usize, payload: d.payload as usize };
        if !shape.is_valid() {
            return Err(format!("ring {i}: capacity {} payload {} out of range", d.capacity, d.payload));
        }
        let wake = match d.wake {
            0 => Wake::Own,
            1 => Wake::Worker,
            other => return Err(format!("ring {i}: unknown doorbell {other}")),
        };
        let end = d.offset.checked_add(shape.bytes() as u64);
        if d.offset < RINGS_OFFSET as u64 || d.offset % RING_ALIGN != 0 || end.is_none_or(|e| e > actual_bytes) {
            return Err(format!("ring {i}: offset {} outside the region", d.offset));
        }
        places.push(RingPlace { offset: d.offset as usize, shape, wake });
    }
    let mut sorted = places.clone();
    sorted.sort_by_key(|p| p.offset);
    for pair in sorted.windows(2) {
        if pair[0].offset + pair[0].shape.bytes() > pair[1].offset {
            return Err(format!("rings at {} and {} overlap", pair[0].offset, pair[1].offset));
        }
    }
    Ok(places)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{PopError, PushError, RingFault};

    const SHAPES: [RingShape; 2] = [RingShape { capacity: 4, payload: 100 }, RingShape { capacity: 8, payload: 16 }];

    fn reattach(region: &Region) -> Result<Region, AttachError> {
        let fd = region.fd().try_clone_to_owned().unwrap();
        Region::attach(fd)
    }

    #[test]
    fn attach_sees_the_created_layout() {
        let host = Region::create(&SHAPES).unwrap();
        let worker = reattach(&host).unwrap();
        assert_eq!(worker.ring_count(), 2);
        assert_eq!(worker.ring_shape(0), Some(SHAPES[0]));
        assert_eq!(worker.ring_shape(1), Some(SHAPES[1]));
        assert_eq!(worker.status().generation.load(Ordering::Acquire), 1);
    }

    #[test]
    fn messages_cross_between_two_mappings() {
        let mut host = Region::create(&SHAPES).unwrap();
        let mut worker = reattach(&host).unwrap();
        let mut tx = host.producer(0).unwrap();
        let mut rx = worker.consumer(0).unwrap();
        assert!(host.producer(0).is_none(), "one producer per ring");
        let mut out = [0u8; 100];
        for round in 0..10u8 {
            for i in 0..4u8 {
                tx.try_push(&[round, i, 42]).unwrap();
            }
            assert_eq!(tx.try_push(&[0]), Err(PushError::Full));
            for i in 0..4u8 {
                let len = rx.try_pop(&mut out).unwrap();
                assert_eq!(&out[..len], &[round, i, 42]);
            }
            assert_eq!(rx.try_pop(&mut out), Err(PopError::Empty));
        }
        assert_eq!(tx.try_push(&[0; 101]), Err(PushError::TooLarge { len: 101, max: 100 }));
    }

    #[test]
    fn corrupted_headers_are_refused() {
        let host = Region::create(&SHAPES).unwrap();
        let ring0 = std::mem::offset_of!(Header, rings);
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (0, b"NOTOURS!".to_vec(), "magic"),
            (8, 99u32.to_le_bytes().to_vec(), "version"),
            (16, 1u64.to_le_bytes().to_vec(), "bytes"),
            (std::mem::offset_of!(Header, ring_count), 1000u32.to_le_bytes().to_vec(), "rings"),
            (ring0, (1u64 << 40).to_le_bytes().to_vec(), "outside"),
            (ring0, 4100u64.to_le_bytes().to_vec(), "outside"),
            (ring0 + 8, 0u32.to_le_bytes().to_vec(), "out of range"),
            (ring0 + 16, 7u32.to_le_bytes().to_vec(), "doorbell"),
            (ring0 + 24, 4096u64.to_le_bytes().to_vec(), "overlap"),
        ];
        for (offset, bytes, expect) in cases {
            let region = Region::create(&SHAPES).unwrap();
            region.scribble(offset, &bytes);
            match reattach(&region) {
                Err(AttachError::Invalid(why)) => assert!(why.contains(expect), "{why} lacks {expect}"),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("accepted a header corrupted at {offset}"),
            }
        }
        drop(host);
    }

    #[test]
    fn corrupted_peer_positions_fault_the_ring_without_panic() {
        let mut host = Region::create(&SHAPES).unwrap();
        let mut tx = host.producer(0).unwrap();
        let mut rx = host.consumer(1).unwrap();
        tx.try_push(&[1]).unwrap();
        let ring0 = host.ring_offset(0);
        let ring1 = host.ring_offset(1);
        // A consumer claiming to have read more than was ever written.
        host.scribble(ring0 + 128, &100u64.to_le_bytes());
        // Fill the cached space so the producer must look at the head.
        for _ in 0..3 {
            tx.try_push(&[2]).unwrap();
        }
        assert!(matches!(tx.try_push(&[3]), Err(PushError::Faulted(RingFault::HeadOutOfRange { seen: 100, .. }))));
        assert!(matches!(tx.try_push(&[3]), Err(PushError::Faulted(_))), "faults are sticky");
        // A producer claiming more messages than the ring holds.
        host.scribble(ring1, &9u64.to_le_bytes());
        let mut out = [0u8; 16];
        assert!(matches!(rx.try_pop(&mut out), Err(PopError::Faulted(RingFault::TailOutOfRange { seen: 9, .. }))));
    }

    #[test]
    fn corrupted_slot_length_faults_the_ring() {
        let mut host = Region::create(&SHAPES).unwrap();
        let mut tx = host.producer(1).unwrap();
        let mut rx = host.consumer(1).unwrap();
        tx.try_push(&[1, 2, 3]).unwrap();
        let slot0 = host.ring_offset(1) + RingControl::BYTES;
        host.scribble(slot0, &u32::MAX.to_le_bytes());
        let mut out = [0u8; 16];
        assert!(matches!(
            rx.try_pop(&mut out),
            Err(PopError::Faulted(RingFault::SlotLengthOutOfRange { seen: u32::MAX, max: 16 }))
        ));
    }

    #[test]
    fn the_region_cannot_be_shrunk_by_a_peer() {
        let host = Region::create(&SHAPES).unwrap();
        assert!(rustix::fs::ftruncate(host.fd(), 0).is_err());
    }
}
