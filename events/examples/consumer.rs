//! A durable pull consumer of Surge's event stream: prints each event and acknowledges it.
//!
//! ```text
//! cargo run -p surge-events --example consumer -- [nats://127.0.0.1:4222] [surge.order.>] [count]
//! ```
//!
//! The consumer is durable (named `example-consumer`): the server remembers what it
//! acknowledged, so a restart goes on where it stopped. Delivery is at least once: an event
//! handled but not yet acknowledged when the consumer dies comes again, so handle events
//! idempotently, by their `id`. (A durable consumer keeps its filter: delete it, e.g.
//! `nats consumer rm SURGE_EVENTS example-consumer`, to start over with another one.)

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let filter = args.next().unwrap_or_else(|| "surge.>".into());
    let count: Option<usize> = args.next().map(|n| n.parse()).transpose()?;

    let js = jetstream::new(async_nats::connect(&url).await?);
    let stream = js.get_stream("SURGE_EVENTS").await?;
    let config = pull::Config {
        durable_name: Some("example-consumer".into()),
        filter_subject: filter,
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer("example-consumer", config).await?;
    let mut messages = consumer.messages().await?.take(count.unwrap_or(usize::MAX));
    while let Some(message) = messages.next().await {
        let message = message?;
        let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
        // One CloudEvent: `type` is what happened, `subject` the order, SKU or user id.
        let field = |k: &str| event[k].as_str().unwrap_or("?").to_owned();
        println!("{} {} {} {}", field("id"), field("type"), field("subject"), field("time"));
        message.ack().await?;
    }
    Ok(())
}
