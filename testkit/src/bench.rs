//! What bench binaries share: an operation's rate on several threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `op` on `threads` threads for `run`; returns operations per second. Thread `t`
/// passes `t`, `t + threads`, `t + 2 * threads`, … to `op`, so each call has its own index.
pub fn rate(threads: usize, run: Duration, op: Arc<dyn Fn(usize) + Send + Sync>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, count, op) = (stop.clone(), count.clone(), op.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    op(i);
                    i += threads;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("bench thread");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
