//! # surge-engine
//!
//! The heart of Surge: an in-process order and inventory engine for flash-sale traffic. Every
//! SKU and every order is an *actor* (exclusive state, reachable only by messages, one message
//! at a time) hosted on a small number of shard threads, so stock decisions for one SKU are
//! serialized without a lock and millions of live orders cost only memory.
//!
//! ## Guarantees
//! * **Never oversell**: for every SKU, `available + reserved + sold == stocked_total`, and no
//!   counter is ever negative; asserted after every applied event.
//! * **No partial order**: `create_order` is a saga; if any line item is refused, what was
//!   reserved is released before the caller hears the rejection.
//! * **Never twice**: `create_order` is idempotent by `(user_id, idempotency_key)`, `pay` by
//!   `payment_id`; reserve, confirm and release are idempotent per order.
//!
//! ## Example
//! ```
//! use surge_engine::{CreateOrder, Engine, EngineConfig, SkuSpec, SaleRules};
//! use rust_decimal::Decimal;
//!
//! let engine = Engine::in_memory(EngineConfig::default()).unwrap();
//! engine.create_sku(SkuSpec {
//!     sku_id: "tee".into(), name: "T-shirt".into(), price: Decimal::new(1990, 2),
//!     initial_stock: 100, rules: SaleRules { per_user_limit: Some(2), ..Default::default() },
//! }).wait().unwrap();
//! let order = engine.create_order(CreateOrder::new("u1", &[("tee", 2)], "checkout-1")).wait().unwrap();
//! assert_eq!(order.total.to_string(), "39.80");
//! let again = engine.create_order(CreateOrder::new("u1", &[("tee", 1)], "checkout-2")).wait();
//! assert_eq!(again.unwrap_err().code(), "purchase_limit_exceeded");
//! ```
//!
//! ## Async
//! Every command returns a [`Pending`], which is a `Future`:
//! ```
//! # use surge_engine::{Engine, EngineConfig};
//! # async fn f(engine: Engine) -> Result<(), surge_engine::EngineError> {
//! let sku = engine.adjust_stock("tee", "restock-1", 50, "restock").await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod audit;
mod chunked;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
mod engine;
pub mod error;
pub mod event;
pub mod fatal;
mod listing;
mod order;
mod pending;
mod publish;
mod reply;
mod routing;
mod shard;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod sku;
pub mod snowflake;
pub mod state;
pub mod state_machine;
pub mod stats;
mod user_filter;
pub mod wallet;

pub use audit::AuditReport;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::EngineConfig;
pub use domain::{
    CreateOrder, DisputeResolution, HistoryEntry, Initiator, LineItem, ListOrders, Order, OrderId, OrderPage,
    OrderStatus, Payment, SaleRules, SkuId, SkuSpec, SkuUpdate, SkuView, TransitionOptions, UserId,
};
pub use engine::{
    Engine, EngineBuilder, CREATE_BATCH_MAX, IDEMPOTENCY_KEY_BYTES_MAX, ID_BYTES_MAX, PRICE_MAX, PRICE_SCALE_MAX,
    STOCK_MAX, TEXT_BYTES_MAX,
};
pub use error::{EngineError, EngineResult};
pub use event::{
    ChangeObserver, Event, Journal, JournalFactory, NullJournal, OnDurable, OrderArchive, OrderEvent, OutboxEvent,
    OutboxWallet, SkuEvent, StorageGate,
};
pub use listing::LIST_SCAN_FACTOR;
pub use order::{ORDER_TRANSITIONS_MAX, ORDER_TRANSITIONS_RESERVED};
pub use pending::Pending;
pub use rust_decimal::Decimal;
pub use sku::ADJUSTMENT_IDS_PER_SKU_MAX;
/// Re-exported: [`Order::items`] and [`Order::history`] are `SmallVec`s (the first entry inline).
pub use smallvec::{smallvec, SmallVec};
pub use state::{EngineState, EngineStateV1, SkuState, SkuStateV1};
pub use state_machine::OrderEventKind;
pub use stats::{EngineStats, ShardStats, TransitionCount};
pub use user_filter::USER_FILTER_BITS;
