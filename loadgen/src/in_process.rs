//! The in-process target: a [`DurableEngine`] in this process, on a temporary data directory
//! (removed afterwards) or `--data-dir`, with the requested durability.

use surge_engine::{Engine, EngineConfig};
use surge_persistence::{Durability, DurableEngine, PersistenceConfig};

use crate::config::{BenchArgs, BenchDurability, Scenario};
use crate::error::{LoadgenError, LoadgenResult};

/// An open engine and the directory it lives in.
pub(crate) struct InProcess {
    durable: DurableEngine,
    /// Held so the temporary directory lives as long as the engine.
    _temp: Option<tempfile::TempDir>,
    keep: bool,
}

impl InProcess {
    pub fn open(args: &BenchArgs) -> LoadgenResult<InProcess> {
        let (dir, temp, keep) = match &args.data_dir {
            Some(d) => (d.clone(), None, true),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("surge-bench-")
                    .tempdir()
                    .map_err(|e| LoadgenError::Engine(format!("temporary data directory: {e}")))?;
                (t.path().to_path_buf(), Some(t), false)
            }
        };
        let mut pcfg = PersistenceConfig::new(&dir);
        pcfg.durability = match args.durability {
            BenchDurability::Sync => Durability::Sync,
            BenchDurability::Os => Durability::Os,
            BenchDurability::None => Durability::None,
        };
        let mut ecfg = EngineConfig {
            shard_count: args.shards,
            live_orders_expected: args.live_orders_expected,
            ..EngineConfig::default()
        };
        // Only mixed wants deadlines to expire during the run; in hot-sku and flash-sale an
        // expiry would hand units back and blur the check "held == acknowledged".
        if args.scenario == Scenario::Mixed {
            ecfg.payment_timeout_ms = args.payment_timeout_ms;
        }
        let durable = DurableEngine::open(pcfg, ecfg).map_err(|e| LoadgenError::Engine(e.to_string()))?;
        Ok(InProcess { durable, _temp: temp, keep })
    }

    pub fn engine(&self) -> &Engine {
        self.durable.engine()
    }

    /// Bytes of WAL records this process wrote so far (`None` with durability `none`).
    pub fn wal_bytes(&self) -> Option<u64> {
        let bytes = self.durable.wal_stats().bytes.load(std::sync::atomic::Ordering::Relaxed);
        (bytes > 0).then_some(bytes)
    }

    /// The WAL writer's group commits so far (`None` with durability `none`).
    pub fn wal_commits(&self) -> Option<crate::report::WalCommits> {
        let h = self.durable.wal_stats().flush_latency_us.lock().ok()?;
        (!h.is_empty()).then(|| crate::report::WalCommits {
            commits: h.len(),
            latency_us_p50: h.value_at_quantile(0.5),
            latency_us_p99: h.value_at_quantile(0.99),
            latency_us_max: h.max(),
        })
    }

    /// Wait until every shard is idle, then run the engine's cross-actor audit.
    pub fn audit(&self) -> bool {
        let engine = self.durable.engine();
        engine.settle();
        engine.audit().is_healthy()
    }

    /// A kept directory gets a final snapshot; a temporary one is simply dropped.
    pub fn close(self) -> LoadgenResult<()> {
        if self.keep {
            self.durable.close().map_err(|e| LoadgenError::Engine(e.to_string()))
        } else {
            self.durable.close_without_snapshot();
            Ok(())
        }
    }
}
