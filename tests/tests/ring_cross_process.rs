//! The shared-memory ring between two real processes.

use std::process::Command;
use std::time::Duration;

use outboard_engine::shm::region::Region;
use outboard_engine::shm::ring::{PopError, PushError, RingFault, RingShape};
use outboard_tests::workspace_bin;

const SHAPE: RingShape = RingShape { capacity: 8, payload: 512 };

fn spawn_peer(region: &Region, mode: &str) -> std::process::Child {
    let mut command = Command::new(workspace_bin("ring-peer"));
    region.pass_to_child(&mut command).expect("pass the region");
    command.arg(mode).spawn().expect("spawn ring-peer")
}

#[test]
fn messages_round_trip_through_another_process() {
    let mut region = Region::create(&[SHAPE, SHAPE]).unwrap();
    let mut tx = region.producer(0).unwrap();
    let mut rx = region.consumer(1).unwrap();
    let mut peer = spawn_peer(&region, "echo");
    let mut buf = [0u8; 512];
    let (mut sent, mut received) = (0u32, 0u32);
    const TOTAL: u32 = 20_000;
    while received < TOTAL {
        // Keep the pipe full: both rings wrap hundreds of times.
        while sent < TOTAL {
            let len = 4 + (sent as usize % 500);
            let mut msg = vec![(sent % 251) as u8; len];
            msg[..4].copy_from_slice(&sent.to_le_bytes());
            match tx.try_push(&msg) {
                Ok(()) => sent += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        // Sleep on the futex when the echo is not back yet (cross-process wake).
        match rx.pop_wait(&mut buf, 100, Some(Duration::from_secs(10))) {
            Ok(len) => {
                assert_eq!(len, 4 + (received as usize % 500));
                assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), received, "in order");
                assert!(buf[4..len].iter().all(|&b| b == (received % 251) as u8), "intact");
                received += 1;
            }
            Err(e) => panic!("no echo of message {received}: {e:?}"),
        }
    }
    while tx.try_push(b"quit").is_err() {
        std::thread::yield_now();
    }
    assert!(peer.wait().unwrap().success());
}

#[test]
fn a_hostile_peer_faults_the_rings_instead_of_crashing_us() {
    let mut region = Region::create(&[SHAPE, SHAPE]).unwrap();
    let mut tx = region.producer(0).unwrap();
    let mut rx = region.consumer(1).unwrap();
    let status = spawn_peer(&region, "scribble").wait().unwrap();
    assert!(status.success());
    let mut buf = [0u8; 512];
    assert!(matches!(rx.try_pop(&mut buf), Err(PopError::Faulted(RingFault::TailOutOfRange { .. }))));
    let mut outcome = Ok(());
    for _ in 0..=SHAPE.capacity {
        outcome = tx.try_push(b"x");
        if outcome.is_err() {
            break;
        }
    }
    assert!(matches!(outcome, Err(PushError::Faulted(RingFault::HeadOutOfRange { seen: u64::MAX, .. }))));
    assert_eq!(tx.free_slots(), 0, "a faulted ring offers no room");
}
