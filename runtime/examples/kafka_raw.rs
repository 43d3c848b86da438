//! Produces and reads Kafka records byte for byte, for the fault tests: header keys that are
//! not UTF-8 and null header values, which the Python client can neither write nor read.
//! Every byte string is hex in the JSON lines it reads and writes; `null` is a null.
//!
//! ```text
//! kafka_raw produce BROKERS TOPIC < records.jsonl   # {"partition":0,"key":"6b","value":null,"headers":[["ff",null]]}
//! kafka_raw read BROKERS TOPIC COUNT TIMEOUT_S      # the same shape, plus "offset"
//! ```

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use streaminfer::kafka::headers::{self, Builder};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(value: &Value) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(text) = value.as_str() else {
        return Ok(None);
    };
    if text.len() % 2 != 0 {
        bail!("odd hex length in {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).with_context(|| format!("not hex: {text:?}"))
        })
        .collect::<anyhow::Result<Vec<u8>>>()
        .map(Some)
}

async fn produce(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "2000000")
        .create()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let spec: Value = serde_json::from_str(&line)?;
        let key = unhex(&spec["key"])?;
        let value = unhex(&spec["value"])?;
        let mut built = Builder::with_capacity(4);
        for h in spec["headers"].as_array().into_iter().flatten() {
            let k = unhex(&h[0])?.context("a header key may not be null")?;
            built.add(&k, unhex(&h[1])?.as_deref());
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(built.build());
        if let Some(p) = spec["partition"].as_i64() {
            record = record.partition(i32::try_from(p)?);
        }
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(v) = &value {
            record = record.payload(v);
        }
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        println!(
            "{}",
            json!({"partition": delivery.partition, "offset": delivery.offset})
        );
    }
    Ok(())
}

fn read(brokers: &str, topic: &str, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka-raw-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "2000000")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while seen < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers: Vec<Value> = headers::read(&message)
            .iter()
            .map(|h| json!([hex(&h.key), h.value.as_deref().map(hex)]))
            .collect();
        println!(
            "{}",
            json!({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().map(hex),
                "value": message.payload().map(hex),
                "headers": headers,
            })
        );
        seen += 1;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["produce", brokers, topic] => produce(brokers, topic).await,
        ["read", brokers, topic, count, timeout] => read(
            brokers,
            topic,
            count.parse()?,
            Duration::from_secs_f64(timeout.parse()?),
        ),
        _ => bail!("usage: kafka_raw produce BROKERS TOPIC | read BROKERS TOPIC COUNT TIMEOUT_S"),
    }
}
