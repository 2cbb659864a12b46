//! The JSON of each kind of event, pinned: a change here is a change of the published format.

use std::sync::Arc;

use surge_engine::wallet::{AccountView, AssetCode};
use surge_engine::{
    Decimal, HistoryEntry, Initiator, LineItem, Order, OrderId, OrderStatus, Payment, SaleRules, SkuView,
};
use surge_events::Encoder;
use surge_gateway::wire::EventWire;
use surge_persistence::outbox::{OutboxEntry, OutboxItem};

const T0_MS: i64 = 1_762_819_200_123; // 2025-11-11T00:00:00.123Z

fn order(status: OrderStatus) -> Order {
    let created =
        HistoryEntry { from: None, to: OrderStatus::PendingPayment, at_ms: T0_MS, by: Initiator::User, reason: None };
    let mut history = vec![created];
    let mut payment = None;
    if status == OrderStatus::Paid {
        history.push(HistoryEntry {
            from: Some(OrderStatus::PendingPayment),
            to: OrderStatus::Paid,
            at_ms: T0_MS + 1_500,
            by: Initiator::Psp,
            reason: None,
        });
        payment = Some(Box::new(Payment {
            payment_id: "psp-1".into(),
            amount: Decimal::new(1980, 2),
            paid_at_ms: T0_MS + 1_500,
        }));
    }
    let item = LineItem {
        sku_id: "tea".into(),
        name: "Tea".into(),
        qty: 2,
        unit_price: Decimal::new(990, 2),
        subtotal: Decimal::new(1980, 2),
    };
    Order {
        order_id: OrderId(9_007_199_254_740_993),
        user_id: "alice".into(),
        items: vec![item].into(),
        total: Decimal::new(1980, 2),
        status,
        version: history.len() as u32,
        created_at_ms: T0_MS,
        updated_at_ms: history.last().map_or(T0_MS, |h| h.at_ms),
        payment_deadline_ms: T0_MS + 900_000,
        payment,
        tracking_number: None,
        shipped: false,
        refund_return_to: None,
        history: history.into(),
        idempotency_key: "k1".into(),
    }
}

fn encode(lsn: u64, index: u32, item: OutboxItem) -> (String, String) {
    let env = Encoder::new("surge", "surge-1", EventWire).encode(&OutboxEntry { lsn, index, item }).expect("encode");
    assert_eq!(env.id, format!("0000000000000000-{lsn}-{index}"));
    (env.subject, String::from_utf8(env.payload).expect("UTF-8"))
}

#[test]
fn order_created_json_is_pinned() {
    let (subject, json) = encode(17, 0, OutboxItem::OrderCreated(Arc::new(order(OrderStatus::PendingPayment))));
    assert_eq!(subject, "surge.order.created");
    assert_eq!(
        json,
        concat!(
            r#"{"specversion":"1.0","id":"0000000000000000-17-0","source":"surge/surge-1","type":"surge.order.created","#,
            r#""subject":"9007199254740993","time":"2025-11-11T00:00:00.123Z","datacontenttype":"application/json","#,
            r#""data":{"order_id":"9007199254740993","user_id":"alice","items":[{"sku_id":"tea","name":"Tea","qty":2,"#,
            r#""unit_price":"9.90","subtotal":"19.80"}],"total":"19.80","status":"pending_payment","version":1,"#,
            r#""created_at_ms":1762819200123,"updated_at_ms":1762819200123,"payment_deadline_ms":1762820100123,"#,
            r#""payment":null,"tracking_number":null,"shipped":false,"refund_return_to":null,"history":[{"from":null,"#,
            r#""to":"pending_payment","at_ms":1762819200123,"by":"user","reason":null}],"idempotency_key":"k1"}}"#
        )
    );
}

#[test]
fn order_changed_json_is_pinned() {
    let (subject, json) = encode(18, 3, OutboxItem::OrderChanged(Arc::new(order(OrderStatus::Paid))));
    assert_eq!(subject, "surge.order.paid");
    assert_eq!(
        json,
        concat!(
            r#"{"specversion":"1.0","id":"0000000000000000-18-3","source":"surge/surge-1","type":"surge.order.paid","#,
            r#""subject":"9007199254740993","time":"2025-11-11T00:00:01.623Z","datacontenttype":"application/json","#,
            r#""data":{"order_id":"9007199254740993","user_id":"alice","items":[{"sku_id":"tea","name":"Tea","qty":2,"#,
            r#""unit_price":"9.90","subtotal":"19.80"}],"total":"19.80","status":"paid","version":2,"#,
            r#""created_at_ms":1762819200123,"updated_at_ms":1762819201623,"payment_deadline_ms":1762820100123,"#,
            r#""payment":{"payment_id":"psp-1","amount":"19.80","paid_at_ms":1762819201623},"tracking_number":null,"#,
            r#""shipped":false,"refund_return_to":null,"history":[{"from":null,"to":"pending_payment","#,
            r#""at_ms":1762819200123,"by":"user","reason":null},{"from":"pending_payment","to":"paid","#,
            r#""at_ms":1762819201623,"by":"psp","reason":null}],"idempotency_key":"k1"}}"#
        )
    );
}

#[test]
fn stock_json_is_pinned_and_its_subject_escaped() {
    let sku = SkuView {
        sku_id: "tea 1.5kg".into(),
        name: "Tea".into(),
        price: Decimal::new(990, 2),
        available: 7,
        reserved: 1,
        sold: 2,
        stocked_total: 10,
        rules: SaleRules::default(),
    };
    let (subject, json) = encode(19, 1, OutboxItem::Stock(Box::new(sku), T0_MS));
    assert_eq!(subject, "surge.stock.tea%201%2E5kg");
    assert_eq!(
        json,
        concat!(
            r#"{"specversion":"1.0","id":"0000000000000000-19-1","source":"surge/surge-1","type":"surge.stock","#,
            r#""subject":"tea 1.5kg","time":"2025-11-11T00:00:00.123Z","datacontenttype":"application/json","#,
            r#""data":{"sku_id":"tea 1.5kg","name":"Tea","price":"9.90","available":7,"reserved":1,"sold":2,"#,
            r#""stocked_total":10,"rules":{"per_user_limit":null,"sale_starts_at_ms":null,"sale_ends_at_ms":null,"#,
            r#""paused":false}}}"#
        )
    );
}

#[test]
fn wallet_json_is_pinned() {
    let account = AccountView {
        asset: AssetCode::parse("CNY").expect("asset"),
        balance: Decimal::new(4010, 2),
        frozen: Decimal::new(0, 2),
        version: 3,
    };
    let (subject, json) = encode(20, 0, OutboxItem::Wallet { user_id: "alice".into(), account, at_ms: T0_MS });
    assert_eq!(subject, "surge.wallet.CNY");
    assert_eq!(
        json,
        concat!(
            r#"{"specversion":"1.0","id":"0000000000000000-20-0","source":"surge/surge-1","type":"surge.wallet","#,
            r#""subject":"alice","time":"2025-11-11T00:00:00.123Z","datacontenttype":"application/json","#,
            r#""data":{"user_id":"alice","account":{"asset":"CNY","balance":"40.10","frozen":"0.00","version":3}}}"#
        )
    );
}
