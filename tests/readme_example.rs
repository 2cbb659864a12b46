//! The README's 20-line library example, kept compiling and passing (with a temporary data
//! directory instead of `data`).

use surge::engine::{CreateOrder, EngineConfig, SaleRules, SkuSpec};
use surge::persistence::{DurableEngine, PersistenceConfig};

#[test]
fn readme_library_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = DurableEngine::open(PersistenceConfig::new(dir.path()), EngineConfig::default())?;
    let engine = db.engine().clone();
    engine
        .create_sku(SkuSpec {
            sku_id: "phone".into(),
            name: "Phone X".into(),
            price: "599.00".parse()?,
            initial_stock: 100,
            rules: SaleRules { per_user_limit: Some(1), ..Default::default() },
        })
        .wait()?;
    let order = engine.create_order(CreateOrder::new("alice", &[("phone", 1)], "cart-42")).wait()?;
    let paid = engine.pay(order.order_id, "psp-7781", order.total, Default::default()).wait()?;
    assert_eq!(paid.status.as_str(), "paid");
    let err = engine.create_order(CreateOrder::new("alice", &[("phone", 1)], "cart-43")).wait().unwrap_err();
    assert_eq!(err.code(), "purchase_limit_exceeded");
    db.close()?;
    assert_eq!(engine.adjust_stock("phone", "adj-late", 1, "late").wait().unwrap_err().code(), "shutting_down");
    let db = DurableEngine::open(PersistenceConfig::new(dir.path()), EngineConfig::default())?;
    assert_eq!(db.engine().get_order(order.order_id)?.status.as_str(), "paid");
    Ok(())
}
