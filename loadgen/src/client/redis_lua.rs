//! The peer everyone asks about: Redis with the classic stock-deduction Lua script.
//!
//! The script is the one found in most flash-sale write-ups: read the stock, compare, `DECRBY`,
//! all atomic because Redis runs a script alone. It is loaded once (`SCRIPT LOAD`) and called by
//! its SHA1 (`EVALSHA`), so a request carries no script text. Lanes of one connection share a
//! `MultiplexedConnection`, which pipelines their concurrent commands on one socket.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{OrderRef, Reply, StockView};
use crate::error::{LoadgenError, LoadgenResult};

/// `KEYS[1]` = stock key, `ARGV[1]` = quantity. Returns 1 (deducted), 0 (not enough stock),
/// -1 (no such key).
pub const STOCK_LUA: &str = r#"
local stock = tonumber(redis.call('GET', KEYS[1]))
if stock == nil then return -1 end
local qty = tonumber(ARGV[1])
if stock < qty then return 0 end
redis.call('DECRBY', KEYS[1], qty)
return 1
"#;

/// The "full order" script (`../shared/bench/full-order.lua`, copied here byte for byte; a
/// test checks the copy when the shared file is beside the repo): what Surge's `create_order`
/// does, in Redis Lua. `KEYS` = stock key, per-user bought hash, idempotency key; `ARGV` =
/// user, qty, per-user limit, total, deadline (ms). Returns the new order id, the existing one
/// for a repeated key, or -1 (no SKU), -2 (not enough stock), -3 (over the per-user limit).
pub const FULL_ORDER_LUA: &str = include_str!("full-order.lua");

/// Which script a Redis target runs (`surge bench --redis-script`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisScript {
    /// [`STOCK_LUA`]: GET, compare, DECRBY; the flash-sale tutorials' counter.
    Classic,
    /// [`FULL_ORDER_LUA`]: idempotency key, per-user limit, stock, order hash, deadline.
    FullOrder,
}

/// The per-user limit passed to the full-order script: none in effect. The scenarios' own
/// limits never bind (flash-sale buyers try once each), so the script still does the work of
/// checking one (`HGET`, `HINCRBY`) without refusing anybody.
const NO_LIMIT: u32 = 1_000_000_000;

/// The key of a SKU's stock.
pub fn stock_key(sku_id: &str) -> String {
    format!("surge_bench:stock:{sku_id}")
}

/// One Redis connection plus the script's SHA1.
#[derive(Clone)]
pub(crate) struct RedisClient {
    conn: MultiplexedConnection,
    sha: Arc<str>,
    script: RedisScript,
}

fn err(e: redis::RedisError) -> LoadgenError {
    LoadgenError::Protocol(format!("redis: {e}"))
}

impl RedisClient {
    /// Connect and load the script.
    pub async fn connect(url: &str, script: RedisScript) -> LoadgenResult<RedisClient> {
        let connect_err =
            |e: redis::RedisError| LoadgenError::Connect { target: url.to_owned(), reason: e.to_string() };
        let client = redis::Client::open(url).map_err(connect_err)?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(connect_err)?;
        conn.set_response_timeout(Duration::from_secs(30));
        let text = match script {
            RedisScript::Classic => STOCK_LUA,
            RedisScript::FullOrder => FULL_ORDER_LUA,
        };
        let sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(text).query_async(&mut conn).await.map_err(connect_err)?;
        Ok(RedisClient { conn, sha: Arc::from(sha), script })
    }

    pub async fn set_stock(&self, sku_id: &str, stock: u64) -> LoadgenResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(stock_key(sku_id))
            .arg(stock)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| LoadgenError::Setup(format!("redis SET: {e}")))
    }

    /// One order attempt: the classic script's deduction, or the full-order script's order.
    pub async fn order(&self, user_id: &str, sku_id: &str, qty: u32, key: &str) -> LoadgenResult<Reply<OrderRef>> {
        match self.script {
            RedisScript::Classic => self.deduct(sku_id, qty).await,
            RedisScript::FullOrder => self.full_order(user_id, sku_id, qty, key).await,
        }
    }

    async fn full_order(&self, user_id: &str, sku_id: &str, qty: u32, key: &str) -> LoadgenResult<Reply<OrderRef>> {
        let mut conn = self.conn.clone();
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64 + 15 * 60 * 1000);
        let r: i64 = redis::cmd("EVALSHA")
            .arg(&*self.sha)
            .arg(3)
            .arg(stock_key(sku_id))
            .arg(format!("surge_bench:bought:{sku_id}"))
            .arg(format!("surge_bench:idem:{user_id}:{key}"))
            .arg(user_id)
            .arg(qty)
            .arg(NO_LIMIT)
            .arg("1.00")
            .arg(deadline_ms)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(match r {
            id if id > 0 => Reply::Ok(OrderRef { order_id: id as u64, total: "1.00".into() }),
            -2 => Reply::Rejected(Cow::Borrowed("sold_out")),
            -3 => Reply::Rejected(Cow::Borrowed("purchase_limit_exceeded")),
            _ => Reply::Rejected(Cow::Borrowed("unknown_sku")),
        })
    }

    async fn deduct(&self, sku_id: &str, qty: u32) -> LoadgenResult<Reply<OrderRef>> {
        let mut conn = self.conn.clone();
        let r: i64 = redis::cmd("EVALSHA")
            .arg(&*self.sha)
            .arg(1)
            .arg(stock_key(sku_id))
            .arg(qty)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(match r {
            1 => Reply::Ok(OrderRef { order_id: 0, total: String::new() }),
            0 => Reply::Rejected(Cow::Borrowed("sold_out")),
            _ => Reply::Rejected(Cow::Borrowed("unknown_sku")),
        })
    }

    pub async fn stock(&self, sku_id: &str) -> LoadgenResult<Reply<StockView>> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = redis::cmd("GET").arg(stock_key(sku_id)).query_async(&mut conn).await.map_err(err)?;
        Ok(match v {
            // A negative stock would be an oversell: report it as 0 available and let the
            // verification (units granted vs. stock) catch it.
            Some(n) => Reply::Ok(StockView { available: u64::try_from(n).unwrap_or(0), ..StockView::default() }),
            None => Reply::Rejected(Cow::Borrowed("unknown_sku")),
        })
    }
}

#[cfg(test)]
mod tests {
    /// The embedded full-order script is the shared one, when the shared folder is beside the
    /// repository (as in CI).
    #[test]
    fn the_full_order_script_is_the_shared_one() {
        let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/full-order.lua");
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, super::FULL_ORDER_LUA, "loadgen/src/client/full-order.lua differs from {shared}");
        }
    }
}
