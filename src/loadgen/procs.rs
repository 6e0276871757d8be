//! `switchboard bench --procs N`: one run carried out by N worker processes, each
//! with its own open-file limit (a process stops near 20,000 connections), and one
//! summary for them all.
//!
//! ```text
//!   bench --procs N ──spawns──> bench (worker 0) ... bench (worker N-1)
//!                                 │ --json --histogram: one summary on stdout
//!   merged Summary <──reads────── ┘ (sums; latency from the merged histograms)
//! ```
//!
//! The command line decides what each worker does (its share of the connections, a
//! run id of its own, the shared room: see `src/cli/bench.rs`); this file runs them,
//! passes a signal on, and merges what they report ([`Summary::merge`]). Workers run
//! in process groups of their own, so a Ctrl-C at the terminal reaches the parent
//! only and each worker gets exactly one SIGINT from it: the workers end their windows,
//! drain, leave, and print their summaries, which are merged as usual.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{LoadError, Summary};

/// How often the parent looks at its workers and at signals.
const POLL: Duration = Duration::from_millis(50);

/// A worker under way: the process, and the thread collecting its stdout.
struct Worker {
    child: Child,
    stdout: Option<JoinHandle<String>>,
}

/// Runs each command as a worker (it must print one JSON summary on stdout, with its
/// histogram's buckets) and returns the merged summary once all have ended.
pub fn run_workers(commands: Vec<Command>) -> Result<Summary, LoadError> {
    let worker_error = |k: usize, why: String| LoadError::Worker(format!("worker {k}: {why}"));
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(LoadError::Io)?;
    let mut workers = Vec::with_capacity(commands.len());
    for (k, mut command) in commands.into_iter().enumerate() {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        // Where the signal can be passed on, the worker does not get the terminal's.
        #[cfg(target_os = "linux")]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| worker_error(k, format!("cannot start: {e}")))?;
        let mut pipe = child.stdout.take();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(pipe) = &mut pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        });
        workers.push(Worker {
            child,
            stdout: Some(stdout),
        });
    }
    let mut running = workers.len();
    while running > 0 {
        if signals.pending().next().is_some() {
            for worker in &workers {
                interrupt(&worker.child);
            }
        }
        running = 0;
        for worker in &mut workers {
            if matches!(worker.child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running > 0 {
            std::thread::sleep(POLL);
        }
    }
    let mut parts = Vec::with_capacity(workers.len());
    for (k, worker) in workers.iter_mut().enumerate() {
        let stdout = worker.stdout.take().map(|t| t.join().unwrap_or_default());
        let stdout = stdout.unwrap_or_default();
        let status = worker.child.wait().map_err(LoadError::Io)?;
        if stdout.trim().is_empty() {
            return Err(worker_error(k, format!("no summary ({status})")));
        }
        let summary: Summary = serde_json::from_str(stdout.trim())
            .map_err(|e| worker_error(k, format!("its summary cannot be read: {e}")))?;
        parts.push(summary);
    }
    Ok(Summary::merge(&parts))
}

/// Passes a signal on to a worker as its first SIGINT: it ends the run early, with a
/// summary.
fn interrupt(child: &Child) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGINT) {
            log::debug!("cannot pass the signal on to worker {pid}: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = child;
}
