//! The runtime as a consumer-group member, against librdkafka's in-process mock cluster, which
//! can fail chosen group requests: the whole runtime runs (the pass-through plugin, the
//! embedded model, the producer, the group).

use std::path::Path;
use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use streaminfer::RunError;
use streaminfer::config::{self, Mode};
use streaminfer::pipeline::PipelineError;
use streaminfer::source::SourceError;

mod common;

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const DEAD_LETTERS: &str = "dead";

/// An at-least-once run on the mock cluster; `consumer` goes in `[kafka.consumer]`.
fn settings(brokers: &str, consumer: &str) -> config::Settings {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
        [kafka]
        brokers = "{brokers}"
        group-id = "members"
        input-topic = "{INPUT}"
        output-topic = "{OUTPUT}"
        dead-letter-topic = "{DEAD_LETTERS}"
        [kafka.consumer]
        "session.timeout.ms" = "6000"
        {consumer}
        [model]
        path = "{}"
        name = "fraud"
        version = 1
        [pipeline]
        shutdown-timeout = "10s"
        [metrics]
        listen = "127.0.0.1:0"
        "#,
        manifest.join("../models/fraud/fraud.onnx").display()
    );
    let plugin = common::plugin(
        "PASSTHROUGH_PLUGIN",
        "passthrough_plugin.wasm",
        "passthrough-plugin",
    );
    config::from_str(&text, Path::new("members.toml"), Mode::Stream, &plugin, &[])
        .expect("valid config")
}

/// Two pods with one `group.instance.id` during a rolling update: the broker fences the older
/// one, and librdkafka gives its consumer up for good (a fatal error, every partition revoked).
/// The run must stop with the reason, not idle for ever owning nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_stops_the_run_with_the_reason() {
    let cluster =
        common::mock_cluster(&[(INPUT, 2), (OUTPUT, 2), (DEAD_LETTERS, 1)], INPUT, 200).await;
    let brokers = cluster.bootstrap_servers();
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    );
    let consumer = "\"group.instance.id\" = \"pod-0\"\n\"heartbeat.interval.ms\" = \"100\"";
    let run = streaminfer::run(settings(&brokers, consumer), std::future::pending());
    let error = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a fenced member's run ends by itself")
        .expect_err("a fenced member's run fails");
    assert!(
        matches!(
            &error,
            RunError::Pipeline(PipelineError::Source(source))
                if matches!(**source, SourceError::Fatal { .. })
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("fenced"), "{error}");
}
