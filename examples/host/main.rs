//! `outboard-host`: a CLAP test host. See `outboard_host` (host/lib.rs) for
//! what it does and `outboard-host --help` for how to call it.

use clap::Parser;
use outboard_host::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Count every panic in this process (the plugin runs in it); the first
    // is printed, the rest only counted.
    outboard_host::panics::install_hook();
    match outboard_host::run::run(&cli.to_config()) {
        Ok(report) => {
            let p = &report.process_us;
            let quirks = report.host_quirks.names();
            println!(
                "{} × {} ({}), {} frames at {} Hz{}{}: {} blocks each, {} deadline misses, process p50 {:.1} µs p99 \
                 {:.1} µs max {:.1} µs, latency {} samples, peak in {:.3} out {:.3}, {} non-finite samples, {} \
                 process errors, {} panics, {} plugin log messages ({} errors), at most {} dry blocks at start, {} \
                 output events",
                report.instances,
                report.plugin.display(),
                report.plugin_id,
                report.block,
                report.rate,
                if report.offline { " offline" } else { "" },
                if quirks.is_empty() { String::new() } else { format!(", host quirks {}", quirks.join(",")) },
                report.blocks().first().copied().unwrap_or(0),
                report.deadline_misses(),
                p.p50,
                p.p99,
                p.max,
                report.latency_samples,
                report.input_peak,
                report.output_peak(),
                report.nan_samples(),
                report.process_errors(),
                report.panics,
                report.host_callbacks.logs,
                report.host_callbacks.error_logs,
                report.dry_blocks_at_start(),
                report.per_instance.iter().map(|i| i.output_events.len() as u64 + i.output_events_dropped).sum::<u64>(),
            );
            if let Some(path) = &cli.json {
                println!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outboard-host: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
