//! `surge events tail`: print the stream as JSON lines, through an ordered consumer (ephemeral,
//! unacknowledged, recreated by the client after a gap: it leaves nothing behind on the server).

use std::io::Write;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use crate::config::EventsConfig;
use crate::connect::{connect, ConnectError};
use crate::publisher::ACK_TIMEOUT;

/// What to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailOptions {
    /// A subject filter (wildcards allowed, e.g. `surge.order.>`); `None`: the whole stream
    /// (`<subject_prefix>.>`).
    pub subject: Option<String>,
    /// Start with the oldest message the stream holds; else with the next one published.
    pub from_start: bool,
    /// Stop after this many messages; `None`: until the connection fails or the caller drops
    /// the future (e.g. on Ctrl-C).
    pub limit: Option<u64>,
}

/// Why tailing stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Could not connect.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The stream does not exist (or JetStream is unavailable).
    #[error("stream: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
    /// The consumer could not be created.
    #[error("consumer: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    /// The message stream could not start.
    #[error("messages: {0}")]
    Messages(#[from] consumer::StreamError),
    /// Receiving failed.
    #[error("receive: {0}")]
    Receive(#[from] consumer::pull::OrderedError),
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// Print each message of `cfg.stream` matching `opts` to `out` as one JSON line (the
/// CloudEvents envelope as published; a payload that is not JSON is printed as a JSON string),
/// flushing after each. Returns how many were printed.
///
/// ```no_run
/// # async fn f() -> Result<(), surge_events::TailError> {
/// use surge_events::{tail, EventsConfig, TailOptions};
/// let cfg = EventsConfig { nats_url: "nats://127.0.0.1:4222".into(), ..EventsConfig::default() };
/// let opts = TailOptions { subject: Some("surge.order.>".into()), from_start: true, limit: Some(10) };
/// let printed = tail(&cfg, &opts, &mut std::io::stdout()).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`TailError`]: no connection, no such stream, or the output failed.
pub async fn tail(cfg: &EventsConfig, opts: &TailOptions, out: &mut (dyn Write + Send)) -> Result<u64, TailError> {
    let client = connect(cfg).await?;
    let mut js = jetstream::new(client);
    js.set_timeout(ACK_TIMEOUT);
    let stream = js.get_stream(&cfg.stream).await?;
    let config = consumer::pull::OrderedConfig {
        filter_subject: opts.subject.clone().unwrap_or_else(|| cfg.stream_subjects()),
        deliver_policy: if opts.from_start { consumer::DeliverPolicy::All } else { consumer::DeliverPolicy::New },
        ..Default::default()
    };
    let mut messages = stream.create_consumer(config).await?.messages().await?;
    let mut printed = 0u64;
    while opts.limit.is_none_or(|n| printed < n) {
        let Some(msg) = messages.next().await else { break };
        let msg = msg?;
        out.write_all(&json_line(&msg.payload))?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

/// `payload` as one line: compact JSON as it is, other JSON re-serialized compactly, anything
/// else as a JSON string; then `\n`.
fn json_line(payload: &[u8]) -> Vec<u8> {
    let mut line = if !payload.contains(&b'\n') && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        payload.to_vec()
    } else {
        match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(v) => serde_json::to_vec(&v),
            Err(_) => serde_json::to_vec(&String::from_utf8_lossy(payload)),
        }
        .unwrap_or_default()
    };
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::json_line;

    #[test]
    fn every_payload_becomes_one_json_line() {
        assert_eq!(json_line(br#"{"a":1}"#), b"{\"a\":1}\n");
        assert_eq!(json_line(b"{\n  \"a\": 1\n}"), b"{\"a\":1}\n");
        assert_eq!(json_line(b"not json\nat all"), b"\"not json\\nat all\"\n");
    }
}
