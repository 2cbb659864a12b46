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

/// The key of a SKU's stock.
pub fn stock_key(sku_id: &str) -> String {
    format!("surge_bench:stock:{sku_id}")
}

/// One Redis connection plus the script's SHA1.
#[derive(Clone)]
pub(crate) struct RedisClient {
    conn: MultiplexedConnection,
    sha: Arc<str>,
}

fn err(e: redis::RedisError) -> LoadgenError {
    LoadgenError::Protocol(format!("redis: {e}"))
}

impl RedisClient {
    /// Connect and load the script.
    pub async fn connect(url: &str) -> LoadgenResult<RedisClient> {
        let connect_err =
            |e: redis::RedisError| LoadgenError::Connect { target: url.to_owned(), reason: e.to_string() };
        let client = redis::Client::open(url).map_err(connect_err)?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(connect_err)?;
        conn.set_response_timeout(Duration::from_secs(30));
        let sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(STOCK_LUA).query_async(&mut conn).await.map_err(connect_err)?;
        Ok(RedisClient { conn, sha: Arc::from(sha) })
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

    pub async fn deduct(&self, sku_id: &str, qty: u32) -> LoadgenResult<Reply<OrderRef>> {
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
