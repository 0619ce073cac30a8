//! `runlens stress`: the seed's synthetic load (Section 7), to check that snapshots
//! reflect it: CPU-bound threads, or memory made really resident.
//!
//! Each prints one line when the load is fully in place (`running ...` / `holding ...`),
//! so a test can take its snapshot at the right moment, and a summary when done.

use std::time::{Duration, Instant};

use crate::cli::{StressArgs, StressCommand};
use crate::exit::{Failure, USAGE};

/// Runs the chosen load.
pub fn run(args: StressArgs) -> Result<(), Failure> {
    match args.command {
        StressCommand::Cpu { threads, seconds } => cpu(threads, seconds),
        StressCommand::Ram { mib, seconds } => ram(mib, seconds),
    }
}

fn say(line: &str) {
    // Flushed at once (tests wait for these lines); a reader gone away does not stop the
    // load, which is the point of the command.
    let _ = crate::format::emit(line);
}

/// Counts primes by trial division: pure CPU work the optimiser cannot remove.
fn count_primes_until(deadline: Instant) -> u64 {
    let mut found = 0;
    let mut n: u64 = 2;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let mut d = 2;
            let mut prime = true;
            while d * d <= n {
                if n.is_multiple_of(d) {
                    prime = false;
                    break;
                }
                d += 1;
            }
            found += u64::from(prime);
            n += 1;
        }
    }
    std::hint::black_box(found)
}

fn cpu(threads: Option<usize>, seconds: f64) -> Result<(), Failure> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || !seconds.is_finite() || seconds <= 0.0 {
        return Err(Failure::new(
            USAGE,
            "--threads and --seconds must be positive",
        ));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || count_primes_until(deadline)))
        .collect();
    say(&format!(
        "running {threads} CPU-bound thread(s) for {seconds} s"
    ));
    let primes: u64 = workers.into_iter().filter_map(|w| w.join().ok()).sum();
    say(&format!(
        "done: {threads} thread(s) busy for {seconds} s ({primes} primes found)"
    ));
    Ok(())
}

fn ram(mib: usize, seconds: f64) -> Result<(), Failure> {
    if mib == 0 || !seconds.is_finite() || seconds < 0.0 {
        return Err(Failure::new(
            USAGE,
            "--mib must be positive and --seconds not negative",
        ));
    }
    let bytes = mib
        .checked_mul(1 << 20)
        .ok_or_else(|| Failure::new(USAGE, "--mib is too large"))?;
    let start = Instant::now();
    // Ask first, so an impossible size is an error message rather than an abort.
    Vec::<u8>::new()
        .try_reserve_exact(bytes)
        .map_err(|e| Failure::new(USAGE, format!("cannot allocate {mib} MiB: {e}")))?;
    // Zeroed memory is only reserved; writing one byte per page makes it resident.
    let mut block = vec![0u8; bytes];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or_else(|| "unknown".to_owned(), |kib| format!("{} MiB", kib / 1024));
    say(&format!(
        "holding {mib} MiB resident for {seconds} s (touched in {:.2} s; process RSS {rss})",
        start.elapsed().as_secs_f64()
    ));
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::hint::black_box(&block);
    drop(block);
    say(&format!("done: released {mib} MiB"));
    Ok(())
}
