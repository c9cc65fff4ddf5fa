//! The queue contract (see `src/queue.rs`), written once and run against both backends: the
//! embedded one on a real redb file, Redis Streams on a real `redis-server` per test. Then what
//! only one has: the embedded file surviving a reopen, Redis losing its data under a consumer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use skiff_store::{Delivery, EmbeddedQueues, Message, Queues, RedisQueues, StoreError};

/// Long enough that nothing is redelivered during a test that does not want it.
const HOLD: Duration = Duration::from_secs(300);

/// Most bytes an owner's queues hold together, in every backend under test: ample for the
/// small messages of most tests.
const OWNER_BYTES: u64 = 8_000;

/// A backend under test, each queue holding at most 5 messages and each owner's queues
/// [`OWNER_BYTES`], and what keeps it alive.
struct Harness {
    queues: Arc<dyn Queues>,
    _keep: Box<dyn std::any::Any + Send>,
}

fn embedded() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let queues = EmbeddedQueues::open(&dir.path().join("data/queues.redb"))
        .unwrap()
        .with_max_depth(5)
        .with_max_owner_bytes(OWNER_BYTES);
    Harness {
        queues: Arc::new(queues),
        _keep: Box::new(dir),
    }
}

fn redis() -> Harness {
    let server = RedisServer::start();
    let queues = RedisQueues::connect(&server.url())
        .unwrap()
        .with_max_depth(5)
        .with_max_owner_bytes(OWNER_BYTES);
    Harness {
        queues: Arc::new(queues),
        _keep: Box::new(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::redis()).await;
                }
            )*
        }
    };
}

conformance!(
    messages_arrive_whole_in_order_and_go_once_acknowledged,
    an_unacknowledged_message_comes_back_with_its_next_attempt,
    a_failed_message_comes_back_after_its_retry_delay,
    a_dead_letter_leaves_the_queue_for_its_dead_letter_queue,
    a_full_queue_refuses_and_loses_nothing,
    an_owners_queues_share_a_byte_bound,
    consumers_share_a_queue_and_none_gets_a_message_twice,
    a_waiting_consumer_gets_what_is_published_meanwhile,
    queues_and_their_messages_are_apart,
    bad_names_and_messages_are_refused,
);

fn message(n: usize) -> Message {
    Message {
        data: format!("message {n}").into_bytes(),
        content_type: n.is_multiple_of(2).then(|| "text/plain".to_string()),
        metadata: vec![("n".into(), n.to_string()), ("trace".into(), "abc".into())],
    }
}

/// Receives until `count` deliveries came or 20 s passed.
async fn receive_all(
    consumer: &dyn skiff_store::Consumer,
    count: usize,
    redeliver_after: Duration,
) -> Vec<Delivery> {
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < count && started.elapsed() < Duration::from_secs(20) {
        got.extend(
            consumer
                .receive(
                    count - got.len(),
                    redeliver_after,
                    Duration::from_millis(200),
                )
                .await
                .unwrap(),
        );
    }
    got
}

async fn messages_arrive_whole_in_order_and_go_once_acknowledged(h: &Harness) {
    for n in 0..3 {
        h.queues.publish("acme/orders", &message(n)).await.unwrap();
    }
    assert_eq!(h.queues.depth("acme/orders").await.unwrap().messages, 3);
    let consumer = h.queues.consumer("acme/orders", "host-1").unwrap();
    let got = consumer.receive(10, HOLD, Duration::ZERO).await.unwrap();
    let messages: Vec<Message> = got.iter().map(|d| d.message.clone()).collect();
    assert_eq!(messages, [message(0), message(1), message(2)]);
    assert!(got.iter().all(|d| d.attempt == 1), "{got:?}");
    // Delivered and held: nobody else gets them.
    assert!(
        consumer
            .receive(10, HOLD, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    for delivery in &got {
        consumer.ack(&delivery.id).await.unwrap();
    }
    assert_eq!(h.queues.depth("acme/orders").await.unwrap().messages, 0);
    // Acknowledging twice is harmless.
    consumer.ack(&got[0].id).await.unwrap();
}

async fn an_unacknowledged_message_comes_back_with_its_next_attempt(h: &Harness) {
    h.queues.publish("q", &message(7)).await.unwrap();
    let first = h.queues.consumer("q", "host-1").unwrap();
    let got = first.receive(1, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].attempt, 1);
    // `first` dies without acknowledging; another consumer gets the message once its
    // delivery has been held for longer than it allows.
    drop(first);
    let second = h.queues.consumer("q", "host-2").unwrap();
    let again = receive_all(&*second, 1, Duration::from_millis(300)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message, message(7));
    assert_eq!(again[0].attempt, 2);
    let third = receive_all(&*second, 1, Duration::from_millis(300)).await;
    assert_eq!(third[0].attempt, 3);
    second.ack(&third[0].id).await.unwrap();
    assert_eq!(h.queues.depth("q").await.unwrap().messages, 0);
}

async fn a_failed_message_comes_back_after_its_retry_delay(h: &Harness) {
    h.queues.publish("q", &message(1)).await.unwrap();
    let consumer = h.queues.consumer("q", "host-1").unwrap();
    let first = consumer.receive(1, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        consumer
            .receive(1, HOLD, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    // Due again shortly, not after HOLD.
    consumer
        .retry_later(&first[0].id, Duration::from_millis(200), HOLD)
        .await
        .unwrap();
    let again = receive_all(consumer.as_ref(), 1, HOLD).await;
    assert_eq!(again.len(), 1, "it came back well before HOLD");
    assert_eq!((again[0].attempt, &again[0].message), (2, &message(1)));
    // At once.
    consumer
        .retry_later(&again[0].id, Duration::ZERO, HOLD)
        .await
        .unwrap();
    let third = consumer.receive(1, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].attempt, 3);
    // Once acknowledged it stays gone.
    consumer.ack(&third[0].id).await.unwrap();
    consumer
        .retry_later(&third[0].id, Duration::ZERO, HOLD)
        .await
        .unwrap();
    assert!(
        consumer
            .receive(1, HOLD, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.queues.depth("q").await.unwrap().messages, 0);
}

async fn a_dead_letter_leaves_the_queue_for_its_dead_letter_queue(h: &Harness) {
    h.queues.publish("q", &message(1)).await.unwrap();
    h.queues.publish("q", &message(2)).await.unwrap();
    let consumer = h.queues.consumer("q", "host-1").unwrap();
    let got = consumer.receive(1, HOLD, Duration::ZERO).await.unwrap();
    consumer
        .dead_letter(&got[0], "q.dead", "the handler answered 500")
        .await
        .unwrap();
    assert_eq!(h.queues.depth("q").await.unwrap().messages, 1);
    assert_eq!(h.queues.depth("q.dead").await.unwrap().messages, 1);
    let dead = h.queues.consumer("q.dead", "host-1").unwrap();
    let got = dead.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    let meta = &got[0].message.metadata;
    let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(got[0].message.data, message(1).data);
    assert_eq!(get("skiff-dead-reason"), Some("the handler answered 500"));
    assert_eq!(get("skiff-attempts"), Some("1"));
    assert_eq!(get("skiff-queue"), Some("q"));
    assert_eq!(get("trace"), Some("abc"));
    // The other message is still there, for the consumer of `q`.
    let rest = consumer.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].message, message(2));
}

async fn a_full_queue_refuses_and_loses_nothing(h: &Harness) {
    for n in 0..5 {
        h.queues.publish("q", &message(n)).await.unwrap();
    }
    let err = h.queues.publish("q", &message(5)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(why) if why.contains("full")),
        "{err:?}"
    );
    // Being handled still counts; acknowledged makes room.
    let consumer = h.queues.consumer("q", "host-1").unwrap();
    let got = consumer.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 5);
    assert!(h.queues.publish("q", &message(5)).await.is_err());
    consumer.ack(&got[0].id).await.unwrap();
    h.queues.publish("q", &message(5)).await.unwrap();
    for delivery in &got[1..] {
        consumer.ack(&delivery.id).await.unwrap();
    }
    let last = consumer.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].message, message(5));
    // A dead-letter queue takes what it is given even when full: its oldest goes.
    for n in 0..6 {
        h.queues.publish("r", &message(n)).await.unwrap_or(());
        let r = h.queues.consumer("r", "host-1").unwrap();
        for delivery in r.receive(5, HOLD, Duration::ZERO).await.unwrap() {
            r.dead_letter(&delivery, "r.dead", "no").await.unwrap();
        }
    }
    assert!(h.queues.depth("r.dead").await.unwrap().messages <= 6);
    assert!(h.queues.depth("r.dead").await.unwrap().messages >= 5);
}

async fn an_owners_queues_share_a_byte_bound(h: &Harness) {
    let big = |n: u8| Message {
        data: vec![n; 1500],
        ..Message::default()
    };
    // Five of 1.5 kB fit in 8 kB, in two queues of one owner; the sixth does not.
    for n in 0..3 {
        h.queues.publish("acme/a", &big(n)).await.unwrap();
    }
    for n in 3..5 {
        h.queues.publish("acme/b", &big(n)).await.unwrap();
    }
    let err = h.queues.publish("acme/c", &big(5)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(why) if why.contains("acme") && why.contains("8000")),
        "{err:?}"
    );
    // Another owner's queues are untouched by it.
    h.queues.publish("globex/a", &big(6)).await.unwrap();
    // A dead letter moves bytes within the owner: still no room.
    let a = h.queues.consumer("acme/a", "host-1").unwrap();
    let got = a.receive(3, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 3);
    a.dead_letter(&got[0], "acme/a-dead", "no").await.unwrap();
    assert!(h.queues.publish("acme/c", &big(5)).await.is_err());
    // Handled messages give their bytes back, dead letters too once handled.
    a.ack(&got[1].id).await.unwrap();
    h.queues.publish("acme/c", &big(5)).await.unwrap();
    assert!(h.queues.publish("acme/c", &big(7)).await.is_err());
    let dead = h.queues.consumer("acme/a-dead", "host-1").unwrap();
    let moved = dead.receive(1, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(moved.len(), 1);
    dead.ack(&moved[0].id).await.unwrap();
    h.queues.publish("acme/c", &big(7)).await.unwrap();
    // Acknowledging twice gives nothing back twice.
    a.ack(&got[1].id).await.unwrap();
    assert!(h.queues.publish("acme/c", &big(8)).await.is_err());
}

async fn consumers_share_a_queue_and_none_gets_a_message_twice(h: &Harness) {
    let consumers: Vec<_> = (0..4)
        .map(|n| h.queues.consumer("q", &format!("worker-{n}")).unwrap())
        .collect();
    let consumers: Vec<Arc<dyn skiff_store::Consumer>> =
        consumers.into_iter().map(Arc::from).collect();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for consumer in &consumers {
        let (consumer, seen) = (consumer.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 10 {
                let got = consumer
                    .receive(2, HOLD, Duration::from_millis(50))
                    .await
                    .unwrap();
                idle = if got.is_empty() { idle + 1 } else { 0 };
                for delivery in got {
                    seen.lock().unwrap().push(delivery.message.data.clone());
                    consumer.ack(&delivery.id).await.unwrap();
                }
            }
        }));
    }
    // 40 messages through a queue of 5: the producer waits while it is full.
    for n in 0..40 {
        loop {
            match h.queues.publish("q", &message(n)).await {
                Ok(()) => break,
                Err(StoreError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let distinct: HashSet<&Vec<u8>> = seen.iter().collect();
    assert_eq!(seen.len(), 40, "each message once");
    assert_eq!(distinct.len(), 40);
}

async fn a_waiting_consumer_gets_what_is_published_meanwhile(h: &Harness) {
    let consumer = h.queues.consumer("q", "host-1").unwrap();
    let queues = h.queues.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queues.publish("q", &message(1)).await.unwrap();
    });
    let got = consumer
        .receive(1, HOLD, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message(1));
    publisher.await.unwrap();
}

async fn queues_and_their_messages_are_apart(h: &Harness) {
    h.queues.publish("acme/q", &message(1)).await.unwrap();
    h.queues.publish("globex/q", &message(2)).await.unwrap();
    let acme = h.queues.consumer("acme/q", "host-1").unwrap();
    let got = acme.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message(1));
    acme.ack(&got[0].id).await.unwrap();
    assert_eq!(h.queues.depth("acme/q").await.unwrap().messages, 0);
    assert_eq!(h.queues.depth("globex/q").await.unwrap().messages, 1);
}

async fn bad_names_and_messages_are_refused(h: &Harness) {
    for bad in ["", "with space", &"q".repeat(201)] {
        assert!(matches!(
            h.queues.publish(bad, &message(1)).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(h.queues.consumer(bad, "host-1").is_err());
    }
    let huge = Message {
        data: vec![0; skiff_store::queue::MAX_MESSAGE_BYTES + 1],
        ..Message::default()
    };
    assert!(matches!(
        h.queues.publish("q", &huge).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(h.queues.depth("q").await.unwrap().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.redb");
    {
        let queues = EmbeddedQueues::open(&path).unwrap();
        queues.publish("q", &message(1)).await.unwrap();
        queues.publish("q", &message(2)).await.unwrap();
        let consumer = queues.consumer("q", "host-1").unwrap();
        let got = consumer.receive(1, HOLD, Duration::ZERO).await.unwrap();
        consumer.ack(&got[0].id).await.unwrap();
        // Another process may not open it meanwhile.
        assert!(EmbeddedQueues::open(&path).is_err());
    }
    let queues = EmbeddedQueues::open(&path).unwrap();
    assert_eq!(queues.depth("q").await.unwrap().messages, 1);
    let consumer = queues.consumer("q", "host-1").unwrap();
    let got = consumer.receive(5, HOLD, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_consumer_outlives_redis_losing_its_data() {
    let mut server = RedisServer::start();
    let queues = RedisQueues::connect(&server.url()).unwrap();
    let consumer = queues.consumer("q", "host-1").unwrap();
    assert!(
        consumer
            .receive(1, HOLD, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    server.stop();
    server.restart();
    // The stream and its group are gone; the consumer makes them again and goes on.
    let started = std::time::Instant::now();
    let got = loop {
        let _ = queues.publish("q", &message(3)).await;
        if let Ok(got) = consumer.receive(1, HOLD, Duration::ZERO).await
            && !got.is_empty()
        {
            break got;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got[0].message, message(3));
}
