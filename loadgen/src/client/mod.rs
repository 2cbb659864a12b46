//! One client connection per target kind, behind one enum so that the runner is the same for
//! every target (enum dispatch: no boxed futures on the hot path).
//!
//! | target | order request | "sold out" |
//! |---|---|---|
//! | in-process | `Engine::create_order` | the engine's error code |
//! | Surge TCP / WebSocket | `create_order` JSON request, replies matched by id | `error.code` |
//! | Redis | `EVALSHA` of [`redis_lua::STOCK_LUA`] (GET, compare, DECRBY) | script returns 0 |
//! | PostgreSQL | `UPDATE … SET stock = stock - $1 WHERE id = $2 AND stock >= $1` | 0 rows |

pub(crate) mod lines;
pub(crate) mod pg;
pub mod redis_lua;

use std::borrow::Cow;
use std::sync::Arc;

use surge_engine::{CreateOrder, Decimal, Engine, Initiator, OrderId, SaleRules, SkuSpec, TransitionOptions};

use crate::error::{LoadgenError, LoadgenResult};

/// A business outcome: done, or refused with a stable error code (`sold_out`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply<T> {
    Ok(T),
    Rejected(Cow<'static, str>),
}

impl<T> Reply<T> {
    /// Transform the success value; a rejection stays as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        match self {
            Reply::Ok(v) => Reply::Ok(f(v)),
            Reply::Rejected(c) => Reply::Rejected(c),
        }
    }
}

/// What a lane keeps of a created order (Redis and PostgreSQL have no orders: id 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderRef {
    pub order_id: u64,
    pub total: String,
}

/// Stock counters of one SKU. Redis and PostgreSQL only have `available` (their remaining
/// stock); the units they granted are counted by the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StockView {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
}

/// One connection (in-process: one handle) to the target.
#[derive(Clone)]
pub(crate) enum Client {
    InProcess(Engine),
    Lines(Arc<lines::LineClient>),
    Redis(redis_lua::RedisClient),
    Postgres(Arc<pg::PgClient>),
}

/// An engine result as a business outcome (its error's stable code).
fn engine_reply<T>(r: Result<T, surge_engine::EngineError>) -> Reply<T> {
    match r {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Rejected(Cow::Borrowed(e.code())),
    }
}

impl Client {
    /// Create (or reset) a SKU with `stock` units at price 1.00.
    pub async fn create_sku(&self, sku_id: &str, stock: u64, per_user_limit: Option<u32>) -> LoadgenResult<()> {
        match self {
            Client::InProcess(engine) => {
                let spec = SkuSpec {
                    sku_id: sku_id.to_owned(),
                    name: format!("bench {sku_id}"),
                    price: Decimal::ONE,
                    initial_stock: stock,
                    rules: SaleRules { per_user_limit, ..SaleRules::default() },
                };
                engine.create_sku(spec).await.map(|_| ()).map_err(|e| LoadgenError::Setup(e.to_string()))
            }
            Client::Lines(c) => c.create_sku(sku_id, stock, per_user_limit).await,
            Client::Redis(c) => c.set_stock(sku_id, stock).await,
            Client::Postgres(c) => c.set_stock(sku_id, stock).await,
        }
    }

    /// Buy `qty` units of one SKU.
    pub async fn order(&self, user_id: &str, sku_id: &str, qty: u32, key: &str) -> LoadgenResult<Reply<OrderRef>> {
        match self {
            Client::InProcess(engine) => {
                let r = engine.create_order(CreateOrder::new(user_id, &[(sku_id, qty)], key)).await;
                Ok(engine_reply(r).map(|o| OrderRef { order_id: o.order_id.0, total: o.total.to_string() }))
            }
            Client::Lines(c) => c.create_order(user_id, sku_id, qty, key).await,
            Client::Redis(c) => c.order(user_id, sku_id, qty, key).await,
            Client::Postgres(c) => c.deduct(sku_id, qty).await,
        }
    }

    /// Pay an order its total (Surge targets only).
    pub async fn pay(&self, order: &OrderRef, payment_id: &str) -> LoadgenResult<Reply<()>> {
        match self {
            Client::InProcess(engine) => {
                let amount: Decimal =
                    order.total.parse().map_err(|_| LoadgenError::Protocol(format!("bad total {:?}", order.total)))?;
                let r = engine.pay(OrderId(order.order_id), payment_id, amount, TransitionOptions::default()).await;
                Ok(engine_reply(r).map(|_| ()))
            }
            Client::Lines(c) => c.pay(order, payment_id).await,
            _ => Err(unsupported("pay")),
        }
    }

    /// Cancel an unpaid order (Surge targets only).
    pub async fn cancel(&self, order_id: u64) -> LoadgenResult<Reply<()>> {
        match self {
            Client::InProcess(engine) => {
                let r = engine.cancel_order(OrderId(order_id), Initiator::User, TransitionOptions::default()).await;
                Ok(engine_reply(r).map(|_| ()))
            }
            Client::Lines(c) => c.cancel(order_id).await,
            _ => Err(unsupported("cancel_order")),
        }
    }

    /// An order's status (`pending_payment`, `paid`, `canceled`, …; Surge targets only).
    pub async fn order_status(&self, order_id: u64) -> LoadgenResult<Reply<String>> {
        match self {
            Client::InProcess(engine) => {
                Ok(engine_reply(engine.get_order(OrderId(order_id))).map(|o| o.status.as_str().to_owned()))
            }
            Client::Lines(c) => c.get_order(order_id).await,
            _ => Err(unsupported("get_order")),
        }
    }

    /// A SKU's stock counters.
    pub async fn stock(&self, sku_id: &str) -> LoadgenResult<Reply<StockView>> {
        match self {
            Client::InProcess(engine) => Ok(engine_reply(engine.get_sku(sku_id)).map(|v| StockView {
                available: v.available,
                reserved: v.reserved,
                sold: v.sold,
            })),
            Client::Lines(c) => c.get_sku(sku_id).await,
            Client::Redis(c) => c.stock(sku_id).await,
            Client::Postgres(c) => c.stock(sku_id).await,
        }
    }
}

fn unsupported(op: &str) -> LoadgenError {
    LoadgenError::InvalidSettings(format!("{op} needs a Surge target"))
}
