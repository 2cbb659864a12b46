//! The relational peer: PostgreSQL with the conditional update that cannot oversell,
//! `UPDATE … SET stock = stock - $1 WHERE id = $2 AND stock >= $1` (one row lock per SKU, one
//! commit per request with the server's durability settings). Lanes of one connection share a
//! `tokio_postgres::Client`, which pipelines their concurrent queries on one socket.

use std::borrow::Cow;

use tokio_postgres::{NoTls, Statement};

use super::{OrderRef, Reply, StockView};
use crate::error::{LoadgenError, LoadgenResult};

/// The table the benchmark creates (if missing) and loads.
pub const TABLE: &str = "surge_bench_stock";

/// One PostgreSQL connection with its prepared statements.
pub(crate) struct PgClient {
    client: tokio_postgres::Client,
    deduct: Statement,
    select: Statement,
}

fn err(e: tokio_postgres::Error) -> LoadgenError {
    LoadgenError::Protocol(format!("postgres: {e}"))
}

impl PgClient {
    /// Connect, create the table if missing (`create_table`: only the first connection, so
    /// that concurrent `CREATE TABLE IF NOT EXISTS` do not race), prepare the statements.
    pub async fn connect(url: &str, create_table: bool) -> LoadgenResult<PgClient> {
        let connect_err =
            |e: tokio_postgres::Error| LoadgenError::Connect { target: url.to_owned(), reason: e.to_string() };
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(connect_err)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the lanes see the error.
            let _ = connection.await;
        });
        if create_table {
            client
                .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0))"
            ))
                .await
                .map_err(connect_err)?;
        }
        let deduct = client
            .prepare(&format!("UPDATE {TABLE} SET stock = stock - $1 WHERE id = $2 AND stock >= $1"))
            .await
            .map_err(connect_err)?;
        let select = client.prepare(&format!("SELECT stock FROM {TABLE} WHERE id = $1")).await.map_err(connect_err)?;
        Ok(PgClient { client, deduct, select })
    }

    pub async fn set_stock(&self, sku_id: &str, stock: u64) -> LoadgenResult<()> {
        let stock = i64::try_from(stock).map_err(|_| LoadgenError::Setup("stock beyond bigint".into()))?;
        self.client
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (id, stock) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock"
                ),
                &[&sku_id, &stock],
            )
            .await
            .map(|_| ())
            .map_err(|e| LoadgenError::Setup(format!("postgres load: {e}")))
    }

    pub async fn deduct(&self, sku_id: &str, qty: u32) -> LoadgenResult<Reply<OrderRef>> {
        let rows = self.client.execute(&self.deduct, &[&i64::from(qty), &sku_id]).await.map_err(err)?;
        Ok(if rows == 1 {
            Reply::Ok(OrderRef { order_id: 0, total: String::new() })
        } else {
            Reply::Rejected(Cow::Borrowed("sold_out"))
        })
    }

    pub async fn stock(&self, sku_id: &str) -> LoadgenResult<Reply<StockView>> {
        let row = self.client.query_opt(&self.select, &[&sku_id]).await.map_err(err)?;
        Ok(match row {
            Some(row) => {
                let n: i64 = row.try_get(0).map_err(err)?;
                Reply::Ok(StockView { available: u64::try_from(n).unwrap_or(0), ..StockView::default() })
            }
            None => Reply::Rejected(Cow::Borrowed("unknown_sku")),
        })
    }
}
