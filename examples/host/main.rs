//! `outboard-host`: a CLAP test host. See `outboard_host` (host/lib.rs) for
//! what it does and `outboard-host --help` for how to call it.

use clap::Parser;
use outboard_host::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match outboard_host::run::run(&cli.to_config()) {
        Ok(report) => {
            let p = &report.process_us;
            println!(
                "{} × {} ({}), {} frames at {} Hz{}: {} blocks each, {} deadline misses, process p50 {:.1} µs p99 \
                 {:.1} µs max {:.1} µs, latency {} samples, peak in {:.3} out {:.3}, {} non-finite samples, {} \
                 process errors",
                report.instances,
                report.plugin.display(),
                report.plugin_id,
                report.block,
                report.rate,
                if report.offline { " offline" } else { "" },
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
