//! `outboard-bench`: Outboard's stress and scaling tool.
//!
//! Each subcommand measures one claim side by side with its baseline in the
//! same run and can write JSON (`--json PATH`); BENCHMARKS.md quotes them.

mod events;
mod faults;
mod jobs;
mod latency;
mod ring;
mod scaling;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "outboard-bench", version, about = "Outboard's stress and scaling benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The seed's Parallel Python experiment: the partial sum over ncpus
    /// workers, native vs Python worker processes vs Python threads.
    Scaling(scaling::ScalingArgs),
    /// Tracks through scripts in real time: outboard vs in-process Python
    /// under the GIL vs native, callback times and round trips.
    Latency(latency::LatencyArgs),
    /// The shared-memory ring vs rtrb, and the cross-process round trip with
    /// a spinning vs a sleeping peer.
    Ring(ring::RingArgs),
    /// Every fault a script can commit, injected into a running graph:
    /// deadline misses, late results, recovery, others affected, leftovers.
    Faults(faults::FaultsArgs),
    /// Many tracks running the example scripts for a long time: misses, late
    /// results, restarts, memory at start and end.
    Soak(soak::SoakArgs),
    /// Job mode at full speed: trivial jobs all at once and one at a time,
    /// outboard vs multiprocessing.Pool vs Parallel Python.
    Jobs(jobs::JobsArgs),
    /// Notes through the plugin: process() time with 0, 16 and 128 note
    /// events per call, each answered by the script.
    Events(events::EventsArgs),
    /// (internal) the far end of `ring`'s round trips.
    #[command(hide = true)]
    RingPeer(ring::PeerArgs),
    /// (internal) the host `faults` kills to check that its workers die with it.
    #[command(hide = true)]
    FaultsHost(faults::HostArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Scaling(args) => scaling::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Ring(args) => ring::run(args),
        Command::Faults(args) => faults::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Events(args) => events::run_bench(args),
        Command::RingPeer(args) => ring::peer(args),
        Command::FaultsHost(args) => faults::host(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outboard-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
