//! `ring-peer MODE`: the far end of a region (on standard input) in another process, for tests.
//!
//! - `echo`: pops each message from ring 0 and pushes it back on ring 1, until
//!   a message `quit`;
//! - `scribble`: plays a hostile peer: overwrites ring 0's head (which the
//!   consumer owns) and ring 1's tail (which the producer owns) with values no
//!   well-behaved peer could write, then exits.

use std::time::Duration;

use outboard_engine::shm::region::Region;
use outboard_engine::shm::ring::PushError;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("usage: ring-peer MODE");
    let mut region = Region::attach_stdin().expect("attach");
    match mode.as_str() {
        "echo" => {
            let mut rx = region.consumer(0).expect("ring 0");
            let mut tx = region.producer(1).expect("ring 1");
            let mut buf = vec![0u8; rx.shape().payload];
            loop {
                let len = rx.pop_wait(&mut buf, 1000, Some(Duration::from_secs(10))).expect("a message within 10 s");
                if &buf[..len] == b"quit" {
                    return;
                }
                loop {
                    match tx.try_push(&buf[..len]) {
                        Ok(()) => break,
                        Err(PushError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        }
        "scribble" => {
            region.scribble(region.ring_offset(0) + 128, &u64::MAX.to_le_bytes());
            region.scribble(region.ring_offset(1), &(1u64 << 40).to_le_bytes());
        }
        other => panic!("unknown mode {other}"),
    }
}
