//! Resident memory per live order.
//!
//! ```text
//! cargo run --release --example memory_per_order -- [COUNT] [--batch N] [--presize] [--prefault]
//! ```
//!
//! Creates `COUNT` orders (default 1,000,000) pending payment: one line item each, distinct users,
//! all on one SKU with enough stock, and the default payment timeout so none expires during the
//! run. Without `--batch` it calls `Engine::create_order` once per order (4,096 in flight); with
//! `--batch N` it submits N orders per `Engine::create_orders` call (the batched API an
//! embedding application would use for bulk work), 4,096 in flight either way. It reads `VmRSS` from `/proc/self/status` before the first order and after the last
//! (after `engine.settle()`), and prints the difference per live order. Linux only.
//!
//! `--presize` sizes the engine's order tables for COUNT (`live_orders_expected`).
//! `--prefault` faults in `COUNT × 640` bytes of heap before the clock starts, as `surge serve`
//! does for its `live_orders_expected` (`surge::process::prefault_heap_for_orders`): CPU per
//! order then leaves out the kernel's page zeroing, and VmRSS no longer grows, so take the
//! memory figures from a run without it (the heap bytes per order are the same either way).
//!
//! The figure includes everything an order costs the engine: the order, its read-model copy of
//! the pointer, the user's order list, the idempotency record, the payment-deadline timer, the
//! SKU's reservation and per-user count, and allocator overhead and slack. A counting global
//! allocator also reports the heap bytes the engine asked for (live allocations, before malloc's
//! own overhead), so the two figures tell data from allocator overhead. The counter wraps
//! mimalloc, the allocator the `surge` binary uses (issue 12's baseline of 881 B and 8.0 µs was
//! taken over glibc's malloc, whose 16-byte chunk header and cross-thread frees cost more).

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use surge::engine::{CreateOrder, Decimal, Engine, EngineConfig, Order, Pending, SaleRules, SkuId, SkuSpec};

/// Allocations this example makes to build one `CreateOrder` (see the loop in `main`).
const REQUEST_ALLOCATIONS: u64 = 3;

/// Requests in flight per window.
const WINDOW: usize = 4_096;

/// mimalloc (as in the `surge` binary), counting the bytes currently allocated.
struct Counting;

static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counters per thread slot, each on its own cache line: one shared counter bumped by three
/// threads on every allocation is a contended atomic (~100 ns a bump), which measured the
/// counting rather than the engine (issue 12: it was about 5% of all samples).
#[repr(align(128))]
struct Slot {
    heap_bytes: AtomicI64,
    /// Allocation calls (alloc, alloc_zeroed, realloc).
    allocations: AtomicI64,
}

const SLOTS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot { heap_bytes: AtomicI64::new(0), allocations: AtomicI64::new(0) };

static COUNTERS: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// This thread's counters (slot 0 while the thread is being torn down).
fn slot() -> &'static Slot {
    &COUNTERS[MY_SLOT.try_with(|s| *s).unwrap_or(0)]
}

fn count(bytes: i64, calls: i64) {
    let s = slot();
    s.heap_bytes.fetch_add(bytes, Ordering::Relaxed);
    s.allocations.fetch_add(calls, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to mimalloc; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = ALLOC.alloc(layout);
        if !p.is_null() {
            count(layout.size() as i64, 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = ALLOC.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as i64, 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOC.dealloc(ptr, layout);
        count(-(layout.size() as i64), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = ALLOC.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64, 1);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes currently allocated through the global allocator.
fn heap_bytes() -> i64 {
    COUNTERS.iter().map(|s| s.heap_bytes.load(Ordering::Relaxed)).sum()
}

/// Allocation calls so far, all threads.
fn allocations() -> i64 {
    COUNTERS.iter().map(|s| s.allocations.load(Ordering::Relaxed)).sum()
}

/// `VmRSS` of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kb: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().expect("VmRSS in kB");
    kb * 1024
}

/// Wait for every request of the window; count (and show the first few) failures.
fn wait_all(window: &mut Vec<Pending<Arc<Order>>>, failed: &mut u64) {
    for p in window.drain(..) {
        if let Err(e) = p.wait() {
            *failed += 1;
            if *failed <= 5 {
                eprintln!("create_order failed: {e}");
            }
        }
    }
}

/// User + system CPU time of this process (all threads), in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may contain spaces): state is
    // field 3, utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')').expect("comm in /proc/self/stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `[COUNT] [--batch N] [--presize] [--prefault]`, or a usage message.
fn parse_args() -> Result<(u64, usize, bool, bool), String> {
    let usage = || {
        "usage: memory_per_order [COUNT] [--batch N] [--presize] [--prefault]   (COUNT > 0, default 1000000; N 1..=4096)".to_owned()
    };
    let (mut count, mut batch, mut presize, mut prefault) = (1_000_000u64, 0usize, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--batch" {
            batch = args.next().and_then(|v| v.parse().ok()).filter(|n| (1..=WINDOW).contains(n)).ok_or_else(usage)?;
        } else if a == "--presize" {
            presize = true;
        } else if a == "--prefault" {
            prefault = true;
        } else {
            count = a.replace('_', "").parse().ok().filter(|n| *n > 0).ok_or_else(usage)?;
        }
    }
    Ok((count, batch, presize, prefault))
}

fn main() -> ExitCode {
    surge::process::apply_huge_page_policy_from_env();
    let (count, batch, presize, prefault) = match parse_args() {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };

    // `--presize`: `live_orders_expected = COUNT`, so no map is ever rehashed (and no outgrown
    // table is left for the allocator to return).
    let live_orders_expected = if presize { count } else { 0 };
    if prefault {
        // The orders' memory faulted in before the clock starts (`surge::process::prefault_heap`).
        surge::process::prefault_heap_for_orders(count, surge::process::PREFAULT_BYTES_PER_ORDER);
    }
    let engine =
        Engine::in_memory(EngineConfig { live_orders_expected, ..EngineConfig::default() }).expect("engine starts");
    let sku: SkuId = Arc::from("mem-sku");
    engine
        .create_sku(SkuSpec {
            sku_id: sku.to_string(),
            name: "Memory test item".into(),
            price: Decimal::new(999, 2),
            initial_stock: count,
            rules: SaleRules::default(),
        })
        .wait()
        .expect("create sku");
    engine.settle();

    let before = rss_bytes();
    let heap_before = heap_bytes();
    let allocations_before = allocations();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let mut window = Vec::with_capacity(WINDOW);
    let mut failed = 0u64;
    let mut pending_batch = Vec::with_capacity(batch);
    // Ids are written into one reused buffer, then copied once to their exact size, as a
    // gateway parsing a request would hold them.
    let mut text = String::with_capacity(32);
    for i in 0..count {
        text.clear();
        let _ = write!(text, "user-{i:08}");
        let user_id: Arc<str> = Arc::from(text.as_str());
        text.clear();
        let _ = write!(text, "checkout-{i:08}");
        let req = CreateOrder { user_id, items: vec![(sku.clone(), 1)], idempotency_key: text.as_str().to_owned() };
        if batch == 0 {
            window.push(engine.create_order(req));
        } else {
            pending_batch.push(req);
            if pending_batch.len() == batch || i + 1 == count {
                window.extend(engine.create_orders(std::mem::take(&mut pending_batch)));
            }
        }
        if window.len() >= WINDOW {
            wait_all(&mut window, &mut failed);
        }
    }
    wait_all(&mut window, &mut failed);
    drop(window);
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    engine.settle();
    let after_uncollected = rss_bytes();
    // The allocator's housekeeping: memory it freed (the tables the maps outgrew) goes back to
    // the OS after a purge delay, checked on its next operations; a quiet process after
    // `settle` makes none, so force it, to count live memory rather than the garbage of the
    // last resizes. A busy server does the same by itself.
    // SAFETY: mi_collect only walks mimalloc's own free lists.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let after = rss_bytes();
    let heap_grown = heap_bytes() - heap_before;
    let allocations = allocations() - allocations_before;

    let live = engine.order_count() as u64;
    let view = engine.get_sku(&sku).expect("sku exists");
    let grown = after.saturating_sub(before);
    let per_order = |bytes: f64| if live == 0 { "n/a".to_owned() } else { format!("{:.0}", bytes / live as f64) };
    println!("{:<24}{:>12}", "orders requested", count);
    println!("{:<24}{:>12}", "orders failed", failed);
    println!("{:<24}{:>12}", "live orders", live);
    println!("{:<24}{:>12}", "sku reserved", view.reserved);
    println!(
        "{:<24}{:>9.1} ms  ({:.0} orders/s)",
        "create time",
        elapsed.as_secs_f64() * 1e3,
        count as f64 / elapsed.as_secs_f64()
    );
    println!("{:<24}{:>9.1} ms  ({:.1} µs per order)", "cpu time, all threads", cpu * 1e3, cpu * 1e6 / count as f64);
    println!("{:<24}{:>9.1} MiB", "VmRSS before", mib(before));
    println!("{:<24}{:>9.1} MiB", "VmRSS after settle", mib(after_uncollected));
    println!("{:<24}{:>9.1} MiB", "VmRSS after mi_collect", mib(after));
    println!("{:<24}{:>9.1} MiB", "VmRSS grown", mib(grown));
    println!("{:<24}{:>9.1} MiB (allocations asked for)", "heap grown", heap_grown as f64 / (1024.0 * 1024.0));
    let rss_note = if prefault { "(VmRSS; not a measure with --prefault: memory faulted in first)" } else { "(VmRSS)" };
    println!("{:<24}{:>12}  {rss_note}", "bytes per live order", per_order(grown as f64));
    println!(
        "{:<24}{:>12}  (heap asked for, no malloc overhead)",
        "heap bytes per order",
        per_order(heap_grown as f64)
    );
    // Building each request here takes 3 of them: the user id's `Arc<str>`, the items `Vec`,
    // the idempotency key's `String`.
    println!(
        "{:<24}{:>12.2}  (all threads; {} of them building the request)",
        "allocations per order",
        allocations as f64 / count as f64,
        REQUEST_ALLOCATIONS
    );
    if live == 0 || failed > 0 || live != count || view.reserved != count {
        eprintln!("not every order was created: the figure is not per requested order");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
