//! The progress bar of a run (indicatif, on stderr, 4 Hz): requests answered and the rate, against
//! the budget or the duration.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Shared;
use crate::config::BenchArgs;

/// The bar and the task that ticks it, unless `--quiet`.
pub(super) fn progress_bar(
    args: &BenchArgs,
    budget: Option<u64>,
    shared: Arc<Shared>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if args.quiet {
        return None;
    }
    let (len, template) = match budget {
        Some(n) => (n, "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} requests  {msg}"),
        None => (args.duration.as_millis() as u64, "{spinner} {elapsed_precise} [{wide_bar}] {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        while !shared.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let done = shared.done.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
            last = (now, done);
            match budget {
                Some(_) => b.set_position(done),
                None => b.set_position(shared.start.elapsed().as_millis() as u64),
            }
            b.set_message(format!("{done} answered, {rate:.0} req/s"));
        }
    });
    Some((bar, ticker))
}
