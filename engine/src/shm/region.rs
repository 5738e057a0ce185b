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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::shm::doorbell::Doorbell;
use crate::shm::ring::{Consumer, Producer, RingControl, RingPtrs, RingShape};

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
    /// A system call failed: inspecting or mapping the memfd, or taking it
    /// over from standard input.
    Io(io::Error),
    /// The region's size or header failed validation (the text says which
    /// check): not a region a well-behaved host made.
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

    /// Gives every page of the region memory now and maps it writable in
    /// this process, so the realtime thread's first write to a ring page is
    /// not a page fault (which neither seccomp nor an allocation check can
    /// see, and which `mlockall` hides but a DAW does not call). On the
    /// creating thread (the supervisor's, never a realtime one), before any
    /// peer has the region.
    fn prefault(&self) -> io::Result<()> {
        rustix::fs::fallocate(&self.fd, rustix::fs::FallocateFlags::empty(), 0, self.len as u64)?;
        let page = rustix::param::page_size();
        for offset in (0..self.len).step_by(page) {
            // SAFETY: inside the fresh mapping, which no peer has yet; the
            // bytes are zero (ftruncate) and stay zero. Volatile, so the
            // write that maps the page is not optimised away.
            unsafe { self.base.add(offset).as_ptr().write_volatile(0) };
        }
        Ok(())
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
    /// Every page of it is given memory and mapped here before it is
    /// returned (see `Mapping::prefault`).
    pub fn create_with(specs: &[(RingShape, Wake)], generation: u32) -> io::Result<Region> {
        Region::create_populated(specs, generation, true)
    }

    /// A region as [`Region::create`] makes it, but with its pages left
    /// untouched: the first write to each is a page fault. The negative
    /// control of the realtime-safety proof's page-fault count.
    #[cfg(any(test, feature = "testing"))]
    pub fn create_untouched(shapes: &[RingShape]) -> io::Result<Region> {
        let rings: Vec<(RingShape, Wake)> = shapes.iter().map(|&s| (s, Wake::Own)).collect();
        Region::create_populated(&rings, 1, false)
    }

    fn create_populated(specs: &[(RingShape, Wake)], generation: u32, prefault: bool) -> io::Result<Region> {
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
        if prefault {
            mapping.prefault()?;
        }
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

    /// Arranges for `command`'s child to find this region on its standard
    /// input: a duplicate of the memfd is the child's fd 0 (this process's
    /// own copy stays close-on-exec, so no other child inherits it), and the
    /// child takes it with [`Region::attach_stdin`].
    ///
    /// Nothing of ours runs in the child before exec (no `pre_exec`), so the
    /// standard library starts it with posix_spawn, which lends the child
    /// this process's memory until exec instead of forking it. A fork
    /// write-protects every private page of the host for copy-on-write, and
    /// each realtime thread's next write to its stack and buffers would be a
    /// page fault, at every worker restart. What a forked child used to do
    /// before exec (closing stray descriptors, the parent-death signal, the
    /// memory limit), the worker does first thing after it
    /// (`crate::wire::launch::settle_worker`).
    pub fn pass_to_child(&self, command: &mut Command) -> io::Result<()> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.mapping.fd, 3)?;
        command.stdin(Stdio::from(fd));
        Ok(())
    }

    /// In the child of [`Region::pass_to_child`]: takes the region from
    /// standard input (moving it to a close-on-exec descriptor of its own
    /// and leaving /dev/null as standard input, so nothing the worker runs
    /// reads or inherits it) and attaches it.
    pub fn attach_stdin() -> Result<Region, AttachError> {
        let stdin = std::io::stdin();
        let fd = rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3).map_err(io::Error::from)?;
        let null = std::fs::File::open("/dev/null")?;
        rustix::stdio::dup2_stdin(&null).map_err(io::Error::from)?;
        Region::attach(fd)
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
        // SAFETY: the taken flag makes this the ring's only producer in this process.
        Some(unsafe { Producer::new(self.ring_ptrs(place)) })
    }

    /// Takes the consuming end of ring `index` (once per region).
    pub fn consumer(&mut self, index: usize) -> Option<Consumer> {
        let place = *self.rings.get(index)?;
        if std::mem::replace(&mut self.consumer_taken[index], true) {
            return None;
        }
        // SAFETY: the taken flag makes this the ring's only consumer in this process.
        Some(unsafe { Consumer::new(self.ring_ptrs(place)) })
    }

    /// Ring `place`'s memory in this mapping.
    fn ring_ptrs(&self, place: RingPlace) -> RingPtrs {
        let doorbell = match place.wake {
            Wake::Own => None,
            Wake::Worker => Some(NonNull::from(&*self.status().doorbell)),
        };
        let (ctrl, slots) = (self.mapping.at(place.offset).cast(), self.mapping.at(place.offset + RingControl::BYTES));
        // SAFETY: `place` was laid out by `create` or validated by
        // `validate_header` to lie inside the mapping, 128-aligned, not
        // overlapping another ring; the doorbell is in the status page of the
        // same mapping; the mapping lives in `owner`.
        unsafe { RingPtrs::new(ctrl, slots, doorbell, place.shape, self.mapping.clone()) }
    }

    /// Overwrites bytes of the region, as a hostile peer could. For tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.mapping.len);
        // SAFETY: in bounds (checked above), and stored with volatile stores
        // like every write to memory a peer may touch: racing other writers
        // only garbles bytes, which every reader validates.
        unsafe { crate::shm::ring::shared::store_bytes(self.mapping.at(offset).as_ptr(), bytes) };
    }

    /// Reads raw bytes of the region, as a peer sees them. For tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn peek(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= self.mapping.len);
        // Through the memfd rather than the mapping: the same pages, no unsafe.
        let mut bytes = vec![0u8; len];
        let read = rustix::io::pread(&self.mapping.fd, &mut bytes, offset as u64).expect("pread of our own memfd");
        assert_eq!(read, len, "short read of our own memfd");
        bytes
    }

    /// Byte offset of ring `index`'s control block, for tests that play a hostile peer.
    #[cfg(any(test, feature = "testing"))]
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
    use crate::shm::ring::{PopError, PushError, RingFault};

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

#[cfg(test)]
mod proptests {
    //! Whatever header a peer leaves in a region (any bytes, any memfd size),
    //! attaching returns an error or rings that lie inside the mapping, apart
    //! from each other: never a panic, never an access out of bounds.
    use std::os::fd::OwnedFd;

    use proptest::prelude::*;

    use super::*;
    use crate::shm::ring::{MAX_CAPACITY, MAX_PAYLOAD, PushError};

    /// Layouts the host could have made: up to 5 small rings.
    fn specs() -> impl Strategy<Value = Vec<(RingShape, Wake)>> {
        let ring = (1..=8usize, 0..=600usize, any::<bool>()).prop_map(|(capacity, payload, worker)| {
            (RingShape { capacity, payload }, if worker { Wake::Worker } else { Wake::Own })
        });
        prop::collection::vec(ring, 0..=5)
    }

    fn header_of(specs: &[(RingShape, Wake)]) -> (Header, u64) {
        let region = Region::create_with(specs, 1).unwrap();
        let bytes = region.peek(0, std::mem::size_of::<Header>());
        // SAFETY: Header is plain integers (any bytes are a valid value) and
        // `bytes` holds exactly size_of::<Header>() of them.
        let header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Header>()) };
        (header, region.mapping.len as u64)
    }

    /// A new value for one field: an arbitrary or edge value, or a step away
    /// from the valid one.
    #[derive(Clone, Copy, Debug)]
    enum Value {
        Abs(u64),
        Rel(i64),
    }

    fn value() -> impl Strategy<Value = Value> {
        let edges = prop::sample::select(vec![
            0,
            1,
            RINGS_OFFSET as u64,
            MAX_CAPACITY as u64,
            MAX_CAPACITY as u64 + 1,
            MAX_PAYLOAD as u64 + 1,
            u32::MAX as u64,
            MAX_REGION_BYTES,
            u64::MAX,
        ]);
        prop_oneof![
            any::<u64>().prop_map(Value::Abs),
            edges.prop_map(Value::Abs),
            (-4..=4i64).prop_map(|k| Value::Rel(k * 64)),
            (-2..=2i64).prop_map(Value::Rel),
        ]
    }

    fn apply(field: &mut u64, value: Value) {
        *field = match value {
            Value::Abs(v) => v,
            Value::Rel(d) => field.wrapping_add_signed(d),
        };
    }

    fn apply32(field: &mut u32, value: Value) {
        let mut wide = *field as u64;
        apply(&mut wide, value);
        *field = wide as u32;
    }

    /// A valid header and memfd size, with a few fields (the size among them)
    /// given other values.
    fn hostile_header() -> impl Strategy<Value = (Header, u64)> {
        let fields = 7 + 4 * MAX_RINGS;
        (specs(), prop::collection::vec((0..fields, value()), 1..=3)).prop_map(move |(specs, changes)| {
            let (mut h, mut actual) = header_of(&specs);
            for (field, v) in changes {
                match field {
                    0 => {
                        let mut magic = u64::from_le_bytes(h.magic);
                        apply(&mut magic, v);
                        h.magic = magic.to_le_bytes();
                    }
                    1 => apply32(&mut h.version, v),
                    2 => apply32(&mut h.header_bytes, v),
                    3 => apply(&mut h.region_bytes, v),
                    4 => apply32(&mut h.control_bytes, v),
                    5 => apply32(&mut h.ring_count, v),
                    6 => apply(&mut actual, v),
                    n => {
                        // Mostly the rings in use.
                        let (ring, part) = ((n - 7) / 4, (n - 7) % 4);
                        let d = &mut h.rings[ring % (h.ring_count as usize + 1).min(MAX_RINGS)];
                        match part {
                            0 => apply(&mut d.offset, v),
                            1 => apply32(&mut d.capacity, v),
                            2 => apply32(&mut d.payload, v),
                            _ => apply32(&mut d.wake, v),
                        }
                    }
                }
            }
            (h, actual)
        })
    }

    fn as_bytes(header: &Header) -> Vec<u8> {
        // SAFETY: Header is repr(C) plain integers with no padding (checked in
        // `the_header_has_no_padding`), so all its bytes are initialised.
        unsafe { std::slice::from_raw_parts((header as *const Header).cast::<u8>(), std::mem::size_of::<Header>()) }
            .to_vec()
    }

    /// A memfd of `len` bytes starting with `header`, as a peer could hand us.
    fn memfd(header: &[u8], len: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("outboard-proptest", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        let n = header.len().min(len as usize);
        assert_eq!(rustix::io::pwrite(&fd, &header[..n], 0).unwrap(), n);
        fd
    }

    /// Every ring of an attached region is usable end to end, and no two share
    /// a byte: fill each with messages naming it, then read them all back.
    fn exercise(region: &mut Region) -> Result<(), TestCaseError> {
        let n = region.ring_count();
        let mut producers: Vec<Producer> = (0..n).map(|i| region.producer(i).unwrap()).collect();
        let mut consumers: Vec<Consumer> = (0..n).map(|i| region.consumer(i).unwrap()).collect();
        for (i, tx) in producers.iter_mut().enumerate() {
            let shape = tx.shape();
            for slot in 0..shape.capacity {
                let msg: Vec<u8> = (0..shape.payload).map(|b| (i * 31 + slot * 7 + b) as u8).collect();
                prop_assert_eq!(tx.try_push(&msg), Ok(()));
            }
            prop_assert_eq!(tx.try_push(&[]), Err(PushError::Full));
        }
        for (i, rx) in consumers.iter_mut().enumerate() {
            let shape = rx.shape();
            let mut out = vec![0u8; shape.payload];
            for slot in 0..shape.capacity {
                prop_assert_eq!(rx.try_pop(&mut out), Ok(shape.payload));
                prop_assert!(out.iter().enumerate().all(|(b, &v)| v == (i * 31 + slot * 7 + b) as u8), "ring {}", i);
            }
        }
        Ok(())
    }

    #[test]
    fn the_header_has_no_padding() {
        let fields = 8 + 4 + 4 + 8 + 4 + 4 + MAX_RINGS * std::mem::size_of::<RingDescriptor>();
        assert_eq!(std::mem::size_of::<Header>(), fields);
        assert_eq!(std::mem::size_of::<RingDescriptor>(), 8 + 4 + 4 + 4 + 4);
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(256))]

        /// The validator alone, on headers of every kind of wrong.
        #[test]
        fn validated_rings_lie_inside_the_region_and_apart((header, actual) in hostile_header()) {
            let Ok(places) = validate_header(&header, actual) else { return Ok(()) };
            prop_assert!(actual >= RINGS_OFFSET as u64 && actual <= MAX_REGION_BYTES || places.is_empty());
            prop_assert!(places.len() <= MAX_RINGS);
            let mut spans: Vec<(usize, usize)> = Vec::new();
            for p in &places {
                prop_assert!(p.shape.is_valid());
                prop_assert!(p.offset >= RINGS_OFFSET && p.offset % RING_ALIGN as usize == 0);
                prop_assert!(p.offset as u64 + p.shape.bytes() as u64 <= actual);
                spans.push((p.offset, p.offset + p.shape.bytes()));
            }
            spans.sort();
            prop_assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "overlap in {:?}", spans);
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(64))]

        /// Attaching a real memfd whose header was tampered with field by field.
        #[test]
        fn attach_refuses_or_yields_usable_rings((header, actual) in hostile_header()) {
            let fd = memfd(&as_bytes(&header), actual.min(1 << 20));
            if let Ok(mut region) = Region::attach(fd) {
                exercise(&mut region)?;
            }
        }

        /// Attaching a memfd of any size holding a valid header with any bytes
        /// patched.
        #[test]
        fn attach_survives_any_patched_bytes(
            specs in specs(),
            patches in prop::collection::vec((0..std::mem::size_of::<Header>(), prop::collection::vec(any::<u8>(), 1..9)), 0..6),
            size in prop::option::weighted(0.3, 0..(64u64 << 10)),
        ) {
            let (header, len) = header_of(&specs);
            let mut bytes = as_bytes(&header);
            for (at, patch) in &patches {
                let end = (at + patch.len()).min(bytes.len());
                bytes[*at..end].copy_from_slice(&patch[..end - at]);
            }
            let fd = memfd(&bytes, size.unwrap_or(len));
            match Region::attach(fd) {
                Ok(mut region) => exercise(&mut region)?,
                Err(AttachError::Invalid(_)) => {}
                Err(AttachError::Io(e)) => prop_assert!(false, "{}", e),
            }
        }
    }
}
