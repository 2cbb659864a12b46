//! The event stream's `data` (issue 15): the same wire shapes as the protocol, for
//! [`surge_events::Publisher`].

use serde::{Serialize, Serializer};
use surge_engine::wallet::AccountView;
use surge_engine::{Order, SkuView};

use super::{WireAccount, WireOrder};

/// Shapes each event's `data` as the protocol shows it: an order as [`WireOrder`] (string id),
/// a SKU as a `get_sku` reply, a wallet account as [`WireAccount`].
///
/// ```
/// use surge_events::Encoder;
/// use surge_gateway::wire::EventWire;
/// let encoder = Encoder::new("surge", "surge-1", EventWire);
/// # let _ = encoder;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EventWire;

impl surge_events::WireFormat for EventWire {
    fn order<S: Serializer>(&self, order: &Order, s: S) -> Result<S::Ok, S::Error> {
        WireOrder(order).serialize(s)
    }

    fn sku<S: Serializer>(&self, sku: &SkuView, s: S) -> Result<S::Ok, S::Error> {
        // `get_sku` and the other SKU replies serialize the engine's view as it is.
        sku.serialize(s)
    }

    fn account<S: Serializer>(&self, account: &AccountView, s: S) -> Result<S::Ok, S::Error> {
        WireAccount::from(account).serialize(s)
    }
}
