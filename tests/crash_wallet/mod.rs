//! The wallet half of the `kill -9` crash test (`tests/recovery_crash.rs`, issue 14).
//!
//! Child side: [`run_thread`] credits (CNY and POINTS, some retried with the same transfer id),
//! debits (a few deliberately past the balance), creates orders on the wallet SKUs, pays most
//! with `pay_with_wallet` (CNY, POINTS or both, summing to the total), refunds some of those
//! (`request_refund` + `confirm_refund`) and completes others, printing one line per
//! acknowledged result. Each thread owns its users, so it knows their balances exactly (read
//! with `get_wallet` when it first touches a user in a cycle) and every outcome it expects.
//!
//! Parent side: [`WalletLedger`] collects the lines; [`check`] runs after each restart.
//!
//! Users are `e<epoch>-t<thread>-w<k>`: a new set every [`EPOCH_CYCLES`] cycles, so each wallet
//! lives through several kills, snapshots and replays, while its ledger stays far below the
//! 1,000 entries a user keeps ([`ITERATIONS_PER_USER`] × at most 8 entries × [`EPOCH_CYCLES`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use surge::engine::wallet::{EntryKind, EntryView, ListWalletEntries, TransferReceipt, WalletPayment, WalletView};
use surge::engine::{
    CreateOrder, Decimal, Engine, Initiator, ListOrders, Order, OrderEventKind, OrderId, OrderStatus, TransitionOptions,
};

/// SKUs only wallet orders buy: refunds give their units back, which the flash-sale SKUs'
/// "sold never drops" check must not see.
pub const WALLET_SKUS: [(&str, &str); 2] = [("W0", "7.25"), ("W1", "13.10")];
/// Threads of wallet traffic in the child (besides the flash-sale threads).
pub const WALLET_THREADS: usize = 2;
/// Users per wallet thread and epoch.
const USERS_PER_THREAD: usize = 8;
/// Cycles one set of wallet users lives through.
const EPOCH_CYCLES: u64 = 5;
/// Most iterations on one user in one cycle (each adds at most 8 ledger entries: two top-ups,
/// two legs frozen, settled and refunded).
const ITERATIONS_PER_USER: u32 = 20;
/// The assets (the engine's defaults) as (code, scale).
const ASSETS: [(&str, u32); 2] = [("CNY", 2), ("POINTS", 0)];

fn user_name(epoch: u64, t: usize, k: usize) -> String {
    format!("e{epoch}-t{t}-w{k}")
}

fn dec(minor: u64, scale: u32) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(minor), scale)
}

fn minor(d: Decimal, scale: u32) -> u64 {
    let m = d * Decimal::from(10u64.pow(scale));
    assert!(m.fract().is_zero() && m >= Decimal::ZERO, "{d} is not a whole number of minor units");
    u64::try_from(m).expect("minor units fit u64")
}

fn legs_text(legs: &[(String, Decimal)]) -> String {
    let parts: Vec<String> = legs.iter().map(|(a, m)| format!("{a}={m}")).collect();
    parts.join(",")
}

fn parse_legs(text: &str) -> Vec<(String, Decimal)> {
    text.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(a, m)| (a.to_owned(), m.parse().expect("leg amount")))
        .collect()
}

fn receipt_line(kind: char, r: &TransferReceipt, asset: &str, amount: Decimal) -> String {
    let a = &r.account;
    format!(
        "WRECEIPT {kind} {} {} {asset} {amount} {} {} {} {}",
        r.user_id, r.transfer_id, a.asset, a.balance, a.frozen, a.version
    )
}

/// One wallet thread's view of its users: balances in minor units per asset, and iterations.
struct Thread<'a> {
    engine: &'a Engine,
    rng: SmallRng,
    cycle: u64,
    t: usize,
    ids: u64,
    balances: HashMap<String, [u64; 2]>,
    iterations: HashMap<String, u32>,
    complete: fn(&Engine, OrderId),
}

impl Thread<'_> {
    fn unexpected(&self, what: &str, detail: &str) {
        println!("WUNEXPECTED c{} t{} {what}: {detail}", self.cycle, self.t);
    }

    /// The user's balances, read once per cycle (the thread owns the user: exact after that).
    fn balances(&mut self, user: &str) -> [u64; 2] {
        if let Some(b) = self.balances.get(user) {
            return *b;
        }
        let w = self.engine.get_wallet(user).wait().expect("child: get_wallet");
        let mut b = [0u64; 2];
        for a in &w.accounts {
            if let Some(i) = ASSETS.iter().position(|(c, _)| *c == a.asset.as_str()) {
                b[i] = minor(a.balance, ASSETS[i].1);
                if !a.frozen.is_zero() {
                    self.unexpected("frozen after restart", &format!("{user} {} {}", a.asset, a.frozen));
                }
            }
        }
        self.balances.insert(user.to_owned(), b);
        b
    }

    /// A new transfer id (or idempotency key) of this thread, unique per cycle.
    fn tid(&mut self, what: &str) -> String {
        self.ids += 1;
        format!("c{}-t{}-{}-{what}", self.cycle, self.t, self.ids)
    }

    /// Credit or debit; prints the receipt (twice when retried) or the refusal.
    fn movement(&mut self, user: &str, asset: usize, amount_minor: u64, credit: bool) {
        let (code, scale) = ASSETS[asset];
        let amount = dec(amount_minor, scale);
        let tid = self.tid(if credit { "cr" } else { "db" });
        let before = self.balances(user)[asset];
        let expect_ok = credit || amount_minor <= before;
        let retries = if self.rng.gen_bool(0.3) { 2 } else { 1 };
        for _ in 0..retries {
            let reply = if credit {
                self.engine.wallet_credit(user, code, amount, &tid).wait()
            } else {
                self.engine.wallet_debit(user, code, amount, &tid).wait()
            };
            match reply {
                Ok(r) => {
                    println!("{}", receipt_line(if credit { 'C' } else { 'D' }, &r, code, amount));
                    if !expect_ok {
                        self.unexpected("debit past the balance passed", &tid);
                    }
                    let now = minor(r.account.balance, scale);
                    let want = if credit { before + amount_minor } else { before.wrapping_sub(amount_minor) };
                    if now != want {
                        self.unexpected("receipt balance", &format!("{tid}: {now}, expected {want}"));
                    }
                    self.balances.get_mut(user).expect("read above")[asset] = now;
                }
                Err(e) if !expect_ok && e.code() == "insufficient_funds" => {
                    println!("WREFUSED {user} {tid} {code} {amount}");
                }
                Err(e) => self.unexpected("movement", &format!("{tid}: {e}")),
            }
        }
    }

    /// Create an order on the wallet SKUs and maybe pay it from the wallet, then refund,
    /// complete or keep it.
    fn order(&mut self, user: &str) {
        let first = self.rng.gen_range(0..WALLET_SKUS.len());
        let mut items = vec![(WALLET_SKUS[first].0, self.rng.gen_range(1..=2))];
        if self.rng.gen_bool(0.25) {
            items.push((WALLET_SKUS[(first + 1) % WALLET_SKUS.len()].0, 1));
        }
        let key = self.tid("o");
        let Ok(order) = self.engine.create_order(CreateOrder::new(user, &items, &key)).wait() else { return };
        println!("ACK {} {}", order.order_id.0, order.version);
        if self.rng.gen_bool(0.1) {
            return; // left unpaid
        }
        let total = minor(order.total, 2);
        // Legs summing to the total: CNY only, POINTS only (1 point = 0.01), or both.
        let want: [u64; 2] = match self.rng.gen_range(0..3) {
            0 => [total, 0],
            1 => [0, total],
            _ => {
                let p = self.rng.gen_range(1..total);
                [total - p, p]
            }
        };
        let mut have = self.balances(user);
        for a in 0..2 {
            if want[a] > have[a] && self.rng.gen_bool(0.85) {
                let top_up = want[a] - have[a] + self.rng.gen_range(0..2_000);
                self.movement(user, a, top_up, true);
                have = self.balances(user);
            }
        }
        let legs: Vec<(String, Decimal)> =
            (0..2).filter(|a| want[*a] > 0).map(|a| (ASSETS[a].0.to_owned(), dec(want[a], ASSETS[a].1))).collect();
        let funded = (0..2).all(|a| want[a] <= have[a]);
        let payment = WalletPayment {
            order_id: order.order_id,
            legs: legs.clone(),
            transfer_id: self.tid("pay"),
            expected_version: Some(order.version),
            owner: Some(user.to_owned()),
        };
        let retries = if self.rng.gen_bool(0.2) { 2 } else { 1 };
        let mut paid = None;
        for _ in 0..retries {
            match self.engine.pay_with_wallet(&payment).wait() {
                Ok(o) if funded && o.status == OrderStatus::Paid => {
                    println!("ACK {} {}", o.order_id.0, o.version);
                    println!("WPAID {} {user} {} {}", o.order_id.0, payment.transfer_id, legs_text(&legs));
                    paid = Some(o);
                }
                Err(e) if !funded && e.code() == "insufficient_funds" => {}
                Ok(o) => self.unexpected("payment", &format!("{}: {:?}", payment.transfer_id, o.status)),
                Err(e) => self.unexpected("payment", &format!("{}: {e}", payment.transfer_id)),
            }
        }
        let Some(o) = paid else { return };
        let b = self.balances.get_mut(user).expect("read above");
        for a in 0..2 {
            b[a] -= want[a];
        }
        let roll = self.rng.gen_range(0..10);
        if roll < 3 {
            let opts = TransitionOptions::default;
            let Ok(r) =
                self.engine.transition(o.order_id, OrderEventKind::RequestRefund, Initiator::User, opts()).wait()
            else {
                return self.unexpected("request_refund", &o.order_id.0.to_string());
            };
            println!("ACK {} {}", r.order_id.0, r.version);
            match self.engine.transition(o.order_id, OrderEventKind::ConfirmRefund, Initiator::Admin, opts()).wait() {
                Ok(r) => {
                    println!("ACK {} {}", r.order_id.0, r.version);
                    println!("WREFUNDED {}", r.order_id.0);
                    let b = self.balances.get_mut(user).expect("read above");
                    for a in 0..2 {
                        b[a] += want[a];
                    }
                }
                Err(e) => self.unexpected("confirm_refund", &format!("{}: {e}", o.order_id.0)),
            }
        } else if roll < 6 {
            (self.complete)(self.engine, o.order_id);
        }
    }
}

/// The child's wallet traffic on thread `t` until `deadline` or the users' budgets run out.
pub fn run_thread(engine: &Engine, seed: u64, cycle: u64, t: usize, deadline: Instant, complete: fn(&Engine, OrderId)) {
    let rng = SmallRng::seed_from_u64(seed ^ (cycle << 8) ^ (0x5741_4c4c_4554 + t as u64));
    let users: Vec<String> = (0..USERS_PER_THREAD).map(|k| user_name(cycle / EPOCH_CYCLES, t, k)).collect();
    let mut th =
        Thread { engine, rng, cycle, t, ids: 0, balances: HashMap::new(), iterations: HashMap::new(), complete };
    while Instant::now() < deadline {
        let open: Vec<&String> =
            users.iter().filter(|u| th.iterations.get(*u).copied().unwrap_or(0) < ITERATIONS_PER_USER).collect();
        if open.is_empty() {
            return;
        }
        let user = open[th.rng.gen_range(0..open.len())].clone();
        *th.iterations.entry(user.clone()).or_insert(0) += 1;
        let roll = th.rng.gen_range(0..20);
        if roll < 7 {
            let asset = th.rng.gen_range(0..2);
            let amount = if asset == 0 { th.rng.gen_range(500..=15_000) } else { th.rng.gen_range(100..=5_000) };
            th.movement(&user, asset, amount, true);
        } else if roll < 16 {
            th.order(&user);
        } else {
            let asset = th.rng.gen_range(0..2);
            let have = th.balances(&user)[asset];
            let amount = if have == 0 || th.rng.gen_bool(0.15) {
                have + th.rng.gen_range(1..=500)
            } else {
                th.rng.gen_range(1..=have)
            };
            th.movement(&user, asset, amount, false);
        }
    }
}

/// An acknowledged credit or debit: what was asked and the receipt's account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Receipt {
    credit: bool,
    asset: String,
    amount: Decimal,
    balance: Decimal,
    frozen: Decimal,
    version: u64,
}

/// An acknowledged wallet payment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Paid {
    user: String,
    tid: String,
    legs: Vec<(String, Decimal)>,
}

/// What the parent knows of the wallets across cycles.
#[derive(Default)]
pub struct WalletLedger {
    /// Acknowledged credits and debits, per user, by transfer id.
    receipts: HashMap<String, BTreeMap<String, Receipt>>,
    /// Debits refused with `insufficient_funds`, per user, by transfer id: (asset, amount).
    refused: HashMap<String, BTreeMap<String, (String, Decimal)>>,
    /// Orders acknowledged as paid by `pay_with_wallet`, per user, by order id.
    paid: HashMap<String, BTreeMap<u64, Paid>>,
    /// Wallet-paid orders whose `confirm_refund` was acknowledged.
    refunded: HashSet<u64>,
    /// What the child found wrong with its own expectations.
    unexpected: Vec<String>,
    /// Each user's wallet at its last full check, with the user's epoch: users of past epochs
    /// are never touched again, so recovery must give them back exactly this.
    views: BTreeMap<String, (u64, WalletView)>,
    /// Units of each wallet SKU that each acknowledged wallet payment holds (none once
    /// refunded), as of the last check of its user.
    held: HashMap<u64, Vec<(String, u64)>>,
    /// Ledger entries read by every check, for the summary line.
    checked_entries: usize,
}

impl WalletLedger {
    /// Take one child line; false when it is not a wallet line.
    pub fn read_line(&mut self, line: &str, ctx: &str) -> bool {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["WRECEIPT", kind, user, tid, asset, amount, acc_asset, balance, frozen, version] => {
                assert_eq!(asset, acc_asset, "{ctx}: receipt for another asset: {line}");
                let r = Receipt {
                    credit: *kind == "C",
                    asset: (*asset).to_owned(),
                    amount: amount.parse().expect("amount"),
                    balance: balance.parse().expect("balance"),
                    frozen: frozen.parse().expect("frozen"),
                    version: version.parse().expect("version"),
                };
                let old =
                    self.receipts.entry((*user).to_owned()).or_default().entry((*tid).to_owned()).or_insert(r.clone());
                assert_eq!(*old, r, "{ctx}: a retry of {user}/{tid} got another receipt");
            }
            ["WREFUSED", user, tid, asset, amount] => {
                let v = ((*asset).to_owned(), amount.parse().expect("amount"));
                self.refused.entry((*user).to_owned()).or_default().insert((*tid).to_owned(), v);
            }
            ["WPAID", id, user, tid, legs] => {
                let p = Paid { user: (*user).to_owned(), tid: (*tid).to_owned(), legs: parse_legs(legs) };
                let id: u64 = id.parse().expect("order id");
                let old = self.paid.entry((*user).to_owned()).or_default().entry(id).or_insert(p.clone());
                assert_eq!(*old, p, "{ctx}: order {id} acknowledged as paid twice, differently");
            }
            ["WREFUNDED", id] => {
                self.refunded.insert(id.parse().expect("order id"));
            }
            ["WUNEXPECTED", ..] => self.unexpected.push(line.to_owned()),
            _ => return false,
        }
        true
    }

    /// Acknowledged (credits and debits, payments, refunds).
    pub fn counts(&self) -> (usize, usize, usize) {
        let receipts = self.receipts.values().map(BTreeMap::len).sum();
        (receipts, self.paid.values().map(BTreeMap::len).sum(), self.refunded.len())
    }
}

fn rate(asset: &str) -> Decimal {
    match asset {
        "CNY" => Decimal::ONE,
        "POINTS" => Decimal::new(1, 2),
        other => panic!("no rate for {other}"),
    }
}

/// Paid or any status after it (the payment stays on the order).
fn paid_or_beyond(s: OrderStatus) -> bool {
    !matches!(s, OrderStatus::PendingPayment | OrderStatus::Canceled)
}

/// Every ledger entry of `user`, oldest first, checked to be complete (seq 1, 2, …).
fn entries(engine: &Engine, user: &str, ctx: &str) -> Vec<EntryView> {
    let mut q = ListWalletEntries { user_id: user.to_owned(), asset: None, before: None, limit: 100 };
    let mut all = Vec::new();
    loop {
        let page = engine.list_wallet_entries(&q).wait().unwrap_or_else(|e| panic!("{ctx}: entries of {user}: {e}"));
        all.extend(page.entries);
        match page.next_before {
            Some(b) => q.before = Some(b),
            None => break,
        }
    }
    all.reverse();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "{ctx}: {user}'s ledger is not complete from seq 1 (keep activity lower)");
    }
    all
}

/// Every order of `user`, live or archived.
fn orders(engine: &Engine, user: &str, ctx: &str) -> Vec<std::sync::Arc<Order>> {
    let mut q = ListOrders { user_id: user.to_owned(), status: None, limit: 100, before: None };
    let mut all = Vec::new();
    loop {
        let page = engine.list_orders(&q).unwrap_or_else(|e| panic!("{ctx}: orders of {user}: {e}"));
        all.extend(page.orders);
        match page.next_before {
            Some(b) => q.before = Some(b),
            None => return all,
        }
    }
}

/// A payment's entries, per kind, as (asset → amount).
#[derive(Default)]
struct PayEntries {
    order: Option<OrderId>,
    freeze: BTreeMap<String, Decimal>,
    settle: BTreeMap<String, Decimal>,
    unfreeze: BTreeMap<String, Decimal>,
    refund: BTreeMap<String, Decimal>,
}

fn legs_map(legs: &[(String, Decimal)], sign: Decimal) -> BTreeMap<String, Decimal> {
    legs.iter().map(|(a, m)| (a.clone(), *m * sign)).collect()
}

/// After a restart (the engine settled): the wallet checks described in `tests/recovery_crash.rs`
/// for every user of the current epoch; users of past epochs must show the wallet they had at
/// their last check. Returns the units of each wallet SKU that acknowledged, unrefunded wallet
/// payments hold (a lower bound of its `sold`).
pub fn check(engine: &Engine, ledger: &mut WalletLedger, cycle: u64, ctx: &str) -> HashMap<String, u64> {
    assert!(ledger.unexpected.is_empty(), "{ctx}: the child saw wrong wallet answers: {:#?}", ledger.unexpected);
    let epoch = cycle / EPOCH_CYCLES;
    for (user, (e, view)) in &ledger.views {
        if *e < epoch {
            let now = engine.get_wallet(user).wait().unwrap_or_else(|e| panic!("{ctx}: wallet of {user}: {e}"));
            assert_eq!(now, *view, "{ctx}: {user}'s wallet changed after its last activity");
        }
    }
    for t in 0..WALLET_THREADS {
        for k in 0..USERS_PER_THREAD {
            let user = user_name(epoch, t, k);
            let view = check_user(engine, ledger, &user, ctx);
            ledger.views.insert(user, (epoch, view));
        }
    }
    let mut sold: HashMap<String, u64> = HashMap::new();
    for (sku, qty) in ledger.held.values().flatten() {
        *sold.entry(sku.clone()).or_default() += qty;
    }
    sold
}

/// The full check of one user's wallet, ledger, orders and acknowledged results.
fn check_user(engine: &Engine, ledger: &mut WalletLedger, user: &str, ctx: &str) -> WalletView {
    let wallet = engine.get_wallet(user).wait().unwrap_or_else(|e| panic!("{ctx}: wallet of {user}: {e}"));
    let entries = entries(engine, user, ctx);
    ledger.checked_entries += entries.len();
    // Per asset: balance = credits − debits − settled + refunds, as the entries list them; and
    // nothing frozen (no open try survives recovery).
    let mut sum: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut pays: BTreeMap<&str, PayEntries> = BTreeMap::new();
    let mut moves: HashMap<&str, &EntryView> = HashMap::new();
    for e in &entries {
        let asset = e.asset.as_str().to_owned();
        if matches!(e.kind, EntryKind::Credit | EntryKind::Debit | EntryKind::Settle | EntryKind::Refund) {
            *sum.entry(asset.clone()).or_default() += e.amount;
        }
        if matches!(e.kind, EntryKind::Credit | EntryKind::Debit) {
            assert!(moves.insert(&e.transfer_id, e).is_none(), "{ctx}: {user}/{} moved twice", e.transfer_id);
            continue;
        }
        let p = pays.entry(&e.transfer_id).or_default();
        assert!(p.order.is_none_or(|o| Some(o) == e.order_id), "{ctx}: {user}/{}: two orders", e.transfer_id);
        p.order = e.order_id;
        let map = match e.kind {
            EntryKind::Freeze => &mut p.freeze,
            EntryKind::Settle => &mut p.settle,
            EntryKind::Unfreeze => &mut p.unfreeze,
            _ => &mut p.refund,
        };
        assert!(map.insert(asset, e.amount).is_none(), "{ctx}: {user}/{}: a leg twice", e.transfer_id);
    }
    for a in &wallet.accounts {
        assert!(a.frozen.is_zero(), "{ctx}: {user}/{} has {} frozen after recovery", a.asset, a.frozen);
        let listed = sum.get(a.asset.as_str()).copied().unwrap_or_default();
        assert_eq!(
            a.balance, listed,
            "{ctx}: {user}/{}: balance {} but its entries add up to {listed}",
            a.asset, a.balance
        );
    }
    // Every try was closed one way, and money taken ⇔ the order took that payment.
    for (tid, p) in &pays {
        check_payment_entries(engine, user, tid, p, ctx);
    }
    for o in orders(engine, user, ctx) {
        let Some(tid) = o.payment.as_ref().and_then(|p| p.payment_id.strip_prefix("wallet:")) else { continue };
        let settled = pays.get(tid).is_some_and(|p| p.order == Some(o.order_id) && !p.settle.is_empty());
        assert!(settled, "{ctx}: order {} ({user}) paid by wallet:{tid} but no money settled", o.order_id.0);
    }
    // Acknowledged payments.
    let mut held = Vec::new();
    for (id, p) in ledger.paid.get(user).into_iter().flatten() {
        let settled = pays.get(p.tid.as_str()).map(|x| &x.settle);
        held.push((*id, check_paid(engine, *id, p, settled, ledger.refunded.contains(id), ctx)));
    }
    ledger.held.extend(held);
    // Acknowledged credits and debits: in the ledger, and a retry answers the same receipt.
    for (tid, r) in ledger.receipts.get(user).into_iter().flatten() {
        let e = moves.get(tid.as_str()).unwrap_or_else(|| panic!("{ctx}: acknowledged {user}/{tid} lost"));
        let signed = if r.credit { r.amount } else { -r.amount };
        assert_eq!((e.asset.as_str(), e.amount), (r.asset.as_str(), signed), "{ctx}: {user}/{tid} entry");
        let again = if r.credit {
            engine.wallet_credit(user, &r.asset, r.amount, tid).wait()
        } else {
            engine.wallet_debit(user, &r.asset, r.amount, tid).wait()
        };
        let again = again.unwrap_or_else(|e| panic!("{ctx}: retry of acknowledged {user}/{tid}: {e}"));
        let a = &again.account;
        assert_eq!(
            (a.asset.as_str(), a.balance, a.frozen, a.version),
            (r.asset.as_str(), r.balance, r.frozen, r.version),
            "{ctx}: a retry of {user}/{tid} after recovery got another receipt"
        );
    }
    // Refused debits took nothing and stay refused.
    for (tid, (asset, amount)) in ledger.refused.get(user).into_iter().flatten() {
        assert!(!moves.contains_key(tid.as_str()), "{ctx}: refused debit {user}/{tid} is in the ledger");
        let again = engine.wallet_debit(user, asset, *amount, tid).wait();
        let code = again.as_ref().map_err(|e| e.code());
        assert_eq!(code.err(), Some("insufficient_funds"), "{ctx}: refused {user}/{tid} retried: {again:?}");
    }
    wallet
}

/// One payment's entries against its order: settled (then the order took the payment, the legs
/// are worth its total, and refund entries exist exactly when it is refunded) or unfrozen (then
/// the order did not take it).
fn check_payment_entries(engine: &Engine, user: &str, tid: &str, p: &PayEntries, ctx: &str) {
    let order_id = p.order.unwrap_or_else(|| panic!("{ctx}: {user}/{tid}: payment entries without an order"));
    let order = engine.get_order(order_id).unwrap_or_else(|e| panic!("{ctx}: {user}/{tid}: order: {e}"));
    let took = order.payment.as_ref().is_some_and(|x| *x.payment_id == *format!("wallet:{tid}"));
    let neg = |m: &BTreeMap<String, Decimal>| m.iter().map(|(a, v)| (a.clone(), -*v)).collect::<BTreeMap<_, _>>();
    if p.settle.is_empty() {
        assert_eq!(neg(&p.unfreeze), p.freeze, "{ctx}: {user}/{tid}: try neither settled nor unfrozen");
        assert!(p.refund.is_empty(), "{ctx}: {user}/{tid}: refund of an unsettled payment");
        assert!(!took, "{ctx}: {user}/{tid}: order {} paid by a canceled try", order_id.0);
        return;
    }
    assert!(p.unfreeze.is_empty(), "{ctx}: {user}/{tid} both settled and unfrozen");
    assert_eq!(p.settle, p.freeze, "{ctx}: {user}/{tid} settled other legs than it froze");
    assert!(
        took && paid_or_beyond(order.status),
        "{ctx}: {user}/{tid}: money taken but order {} is {:?} with payment {:?}",
        order_id.0,
        order.status,
        order.payment
    );
    let value: Decimal = p.settle.iter().map(|(a, v)| -*v * rate(a)).sum();
    assert_eq!(value, order.total, "{ctx}: {user}/{tid}: legs worth {value}, order total {}", order.total);
    if order.status == OrderStatus::Refunded {
        assert_eq!(p.refund, neg(&p.settle), "{ctx}: {user}/{tid}: refunded order, refund entries differ");
    } else {
        assert!(p.refund.is_empty(), "{ctx}: {user}/{tid}: refund entries, order {:?}", order.status);
    }
}

/// An acknowledged wallet payment after recovery: the order is paid (or beyond) by that
/// transfer, its acknowledged legs are what was settled, an acknowledged refund holds, and a
/// retry answers the order. Returns the units the order holds (none once refunded).
fn check_paid(
    engine: &Engine,
    id: u64,
    p: &Paid,
    settled: Option<&BTreeMap<String, Decimal>>,
    refunded: bool,
    ctx: &str,
) -> Vec<(String, u64)> {
    let order = engine.get_order(OrderId(id)).unwrap_or_else(|e| panic!("{ctx}: paid order {id}: {e}"));
    let pid = format!("wallet:{}", p.tid);
    assert!(
        paid_or_beyond(order.status) && order.payment.as_ref().is_some_and(|x| *x.payment_id == *pid),
        "{ctx}: order {id} acknowledged as paid by {pid} is {:?} with payment {:?}",
        order.status,
        order.payment
    );
    assert_eq!(settled, Some(&legs_map(&p.legs, -Decimal::ONE)), "{ctx}: order {id}: settled legs");
    if refunded {
        assert_eq!(order.status, OrderStatus::Refunded, "{ctx}: order {id}: acknowledged refund");
    }
    let retry = WalletPayment {
        order_id: OrderId(id),
        legs: p.legs.clone(),
        transfer_id: p.tid.clone(),
        expected_version: None,
        owner: Some(p.user.clone()),
    };
    let again = engine.pay_with_wallet(&retry).wait();
    assert!(again.as_ref().is_ok_and(|o| o.order_id.0 == id), "{ctx}: retry of order {id}'s payment: {again:?}");
    if order.status == OrderStatus::Refunded {
        return Vec::new();
    }
    order.items.iter().map(|i| (i.sku_id.to_string(), u64::from(i.qty))).collect()
}

/// A one-line summary of what a run checked.
pub fn summary(ledger: &WalletLedger) -> String {
    let (moves, paid, refunded) = ledger.counts();
    format!(
        "{moves} acknowledged credits/debits, {} refused debits, {paid} wallet payments ({refunded} refunded), \
         {} wallets, {} ledger entries checked",
        ledger.refused.values().map(BTreeMap::len).sum::<usize>(),
        ledger.views.len(),
        ledger.checked_entries
    )
}
