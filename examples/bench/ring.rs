//! `outboard-bench ring`: the shared-memory ring against rtrb in one process
//! (ns per push and pop of one audio block), and the round trip to another
//! process with the consumer spinning or sleeping on the futex (µs, and the
//! CPU the peer burns for it).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use outboard_engine::measurement::histogram::Histogram;
use outboard_engine::shm::region::Region;
use outboard_engine::shm::ring::{PopError, PushError, RingShape};
use serde_json::json;

/// One stereo block of 64 frames, as the tracks send it.
const BLOCK_FLOATS: usize = 128;
const SHAPE: RingShape = RingShape { capacity: 16, payload: BLOCK_FLOATS * 4 + 64 };

#[derive(Args, Debug)]
pub struct RingArgs {
    /// Push/pop pairs per in-process measurement.
    #[arg(long, default_value_t = 2_000_000)]
    ops: u64,
    /// Round trips per cross-process measurement.
    #[arg(long, default_value_t = 3000)]
    round_trips: u64,
    /// Time between round trips (µs), like audio periods.
    #[arg(long, default_value_t = 1000)]
    interval_us: u64,
    /// Peer spin times (µs) before it sleeps on the futex; 0 = sleep at once.
    #[arg(long, value_delimiter = ',', default_value = "0,2000")]
    spin_us: Vec<u64>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PeerArgs {
    #[arg(long)]
    spin_us: u64,
}

pub fn run(args: RingArgs) -> Result<(), String> {
    let block = [0.5f32; BLOCK_FLOATS];
    let mut bytes = [0u8; BLOCK_FLOATS * 4];
    for (chunk, s) in bytes.chunks_exact_mut(4).zip(block) {
        chunk.copy_from_slice(&s.to_le_bytes());
    }

    // In one thread: push then pop, the pure cost of the two operations.
    let mut region = Region::create(&[SHAPE]).map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = (region.producer(0).expect("ring"), region.consumer(0).expect("ring"));
    let mut out = [0u8; BLOCK_FLOATS * 4 + 64];
    let shm_ns = time_per_op(args.ops, || {
        tx.try_push(&bytes).expect("room");
        rx.try_pop(&mut out).expect("a message");
    });
    let (mut rtx, mut rrx) = rtrb::RingBuffer::<[f32; BLOCK_FLOATS]>::new(16);
    let rtrb_ns = time_per_op(args.ops, || {
        rtx.push(block).expect("room");
        std::hint::black_box(rrx.pop().expect("a block"));
    });

    // Across two threads, streaming: what one block costs end to end.
    let shm_stream = stream_shm(args.ops / 4)?;
    let rtrb_stream = stream_rtrb(args.ops / 4);

    println!("In one process, one stereo block of 64 frames ({} bytes):", BLOCK_FLOATS * 4);
    println!(
        "  push + pop, same thread:   shared-memory ring {shm_ns:6.1} ns   rtrb {rtrb_ns:6.1} ns   ({:.2}x)",
        shm_ns / rtrb_ns
    );
    println!(
        "  streamed between threads:  shared-memory ring {shm_stream:6.1} ns   rtrb {rtrb_stream:6.1} ns   ({:.2}x)",
        shm_stream / rtrb_stream
    );

    println!(
        "\nRound trip to another process, one block every {} µs, {} round trips:",
        args.interval_us, args.round_trips
    );
    println!("  peer spin µs | round trip µs p50 / p99 / max | peer CPU (% of one core)");
    let mut trips = Vec::new();
    for &spin in &args.spin_us {
        let (h, cpu) = round_trips(spin, args.round_trips, args.interval_us)?;
        let p = h.percentiles();
        println!("  {spin:>12} | {:>8.1} / {:>6.1} / {:>7.1}   | {:>5.1} %", p.p50, p.p99, p.max, cpu * 100.0);
        trips.push(
            json!({"peer_spin_us": spin, "roundtrip_us": {"p50": p.p50, "p99": p.p99, "max": p.max}, "peer_cpu": cpu}),
        );
    }
    if let Some(path) = &args.json {
        let value = json!({
            "push_pop_ns": {"shm": shm_ns, "rtrb": rtrb_ns},
            "stream_ns": {"shm": shm_stream, "rtrb": rtrb_stream},
            "interval_us": args.interval_us,
            "round_trips": trips,
        });
        std::fs::write(path, serde_json::to_string_pretty(&value).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn time_per_op(ops: u64, mut op: impl FnMut()) -> f64 {
    for _ in 0..ops / 10 {
        op();
    }
    let began = Instant::now();
    for _ in 0..ops {
        op();
    }
    began.elapsed().as_nanos() as f64 / ops as f64
}

fn stream_shm(blocks: u64) -> Result<f64, String> {
    let mut region = Region::create(&[SHAPE]).map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = (region.producer(0).expect("ring"), region.consumer(0).expect("ring"));
    let began = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut out = [0u8; BLOCK_FLOATS * 4 + 64];
        let mut got = 0;
        while got < blocks {
            match rx.try_pop(&mut out) {
                Ok(_) => got += 1,
                Err(PopError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e:?}"),
            }
        }
    });
    let bytes = [0u8; BLOCK_FLOATS * 4];
    let mut sent = 0;
    while sent < blocks {
        match tx.try_push(&bytes) {
            Ok(()) => sent += 1,
            Err(PushError::Full) => std::hint::spin_loop(),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    reader.join().map_err(|_| "reader panicked")?;
    Ok(began.elapsed().as_nanos() as f64 / blocks as f64)
}

fn stream_rtrb(blocks: u64) -> f64 {
    let (mut tx, mut rx) = rtrb::RingBuffer::<[f32; BLOCK_FLOATS]>::new(16);
    let began = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < blocks {
            match rx.pop() {
                Ok(block) => {
                    std::hint::black_box(block);
                    got += 1
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
    });
    let mut sent = 0;
    while sent < blocks {
        if tx.push([0.0; BLOCK_FLOATS]).is_ok() {
            sent += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    reader.join().expect("reader");
    began.elapsed().as_nanos() as f64 / blocks as f64
}

/// Round trips through a peer process; returns the histogram and the peer's
/// CPU time as a fraction of the wall time.
fn round_trips(spin_us: u64, count: u64, interval_us: u64) -> Result<(Histogram, f64), String> {
    let mut region = Region::create(&[SHAPE, SHAPE]).map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = (region.producer(0).expect("ring"), region.consumer(1).expect("ring"));
    let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    region.pass_to_child(&mut command).map_err(|e| e.to_string())?;
    let mut child =
        command.args(["ring-peer", "--spin-us", &spin_us.to_string()]).spawn().map_err(|e| e.to_string())?;
    let bytes = [0u8; BLOCK_FLOATS * 4];
    let mut out = [0u8; BLOCK_FLOATS * 4 + 64];
    let h = Histogram::new();
    let began = Instant::now();
    let cpu_before = child_cpu(child.id());
    for i in 0..count + 100 {
        let due = began + Duration::from_micros(interval_us * i);
        while Instant::now() < due {
            std::thread::sleep(Duration::from_micros(50).min(due.saturating_duration_since(Instant::now())));
        }
        let sent = Instant::now();
        tx.try_push(&bytes).map_err(|e| format!("{e:?}"))?;
        // Wait by yielding, not spinning: the woken peer may be placed on
        // this very core, and a spin here would keep it off until the next
        // scheduler tick, measuring the scheduler rather than the ring.
        loop {
            match rx.try_pop(&mut out) {
                Ok(_) => break,
                Err(PopError::Empty) => std::thread::yield_now(),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
        if i >= 100 {
            h.record(sent.elapsed().as_nanos() as u64);
        }
    }
    let wall = began.elapsed().as_secs_f64();
    let cpu = child_cpu(child.id()) - cpu_before;
    tx.try_push(b"quit").map_err(|e| format!("{e:?}"))?;
    let _ = child.wait();
    Ok((h, cpu / wall))
}

/// User + system CPU seconds of a process, from /proc.
fn child_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime 11, stime 12 (clock ticks).
    (ticks(11) + ticks(12)) / 100.0
}

/// The far end of `round_trips`: echoes every block until `quit`.
pub fn peer(args: PeerArgs) -> Result<(), String> {
    let mut region = Region::attach_stdin().map_err(|e| e.to_string())?;
    let (mut rx, mut tx) = (region.consumer(0).expect("ring"), region.producer(1).expect("ring"));
    let mut buf = [0u8; BLOCK_FLOATS * 4 + 64];
    loop {
        let spin_until = Instant::now() + Duration::from_micros(args.spin_us);
        while !rx.has_message() && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let len = rx.pop_wait(&mut buf, 0, Some(Duration::from_secs(5))).map_err(|e| format!("{e:?}"))?;
        if &buf[..len] == b"quit" {
            return Ok(());
        }
        tx.try_push(&buf[..len]).map_err(|e| format!("{e:?}"))?;
    }
}
