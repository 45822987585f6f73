//! Commit throughput of this crate next to its alternatives, in one process.
//!
//! ```text
//! cargo bench --bench throughput -- --quick            # smoke test, < 60 s
//! cargo bench --bench throughput -- --json out.json    # full run, a few minutes
//! cargo bench --bench throughput -- --help
//! ```
//!
//! N threads in a closed loop each append a 128-byte record to one shared device and
//! wait until a strategy says it is durable. Cells (device × N × strategy) are
//! interleaved round-robin, so the machine's noise hits every strategy alike. Every
//! acknowledgement is checked against the device's own bookkeeping: a record must have
//! been fully written before a flush that has finished started. Any violation makes the
//! run exit with status 1.

#[path = "support/device.rs"]
mod device;
#[path = "support/report.rs"]
mod report;
#[path = "support/run.rs"]
mod run;
#[path = "support/strategies.rs"]
mod strategies;

use strategies::Kind;

fn main() {
    run::main(run::Program {
        command: "cargo bench --bench throughput --",
        // Every strategy but the planted bug, which only the self-test runs.
        entrants: strategies::entrants(
            &Kind::ALL
                .into_iter()
                .filter(|&k| k != Kind::Broken)
                .collect::<Vec<_>>(),
        ),
        default_strategies: Kind::DEFAULT.iter().map(|k| k.name()).collect(),
        quick_threads: "1,4,64",
        quick_rounds: 4,
    });
}
