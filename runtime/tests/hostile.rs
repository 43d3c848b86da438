//! The sandbox against a plugin that misbehaves on purpose (`plugins/hostile`, built from source
//! by `scripts/test.sh` and passed in `HOSTILE_PLUGIN`). Each bad record must fail alone, with
//! the reason, within a bound, and the plugin must keep serving the records around it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use streaminfer::config::{OutputLimits, PluginSettings};
use streaminfer::contract::{
    Completion, Decision, InferenceResponse, InputRecord, ModelInfo, Origin,
};
use streaminfer::failure::{Failure, Fault, Reason};
use streaminfer::plugin::{PluginHost, PluginPool};

const CALL_TIMEOUT: Duration = Duration::from_millis(200);
const MEMORY_LIMIT: u64 = 16 << 20;
/// Containment of one bad record inside a batch: the batch call hits the limit, the instance is
/// rebuilt, each record is retried alone and the culprit hits the limit once more. Generous for
/// a shared 2-core machine; a plugin that escaped its limits would take forever instead.
const CONTAINED_WITHIN: Duration = Duration::from_secs(5);

mod common;

fn hostile_plugin() -> PathBuf {
    common::plugin("HOSTILE_PLUGIN", "hostile_plugin.wasm", "hostile-plugin")
}

fn pool() -> PluginPool {
    let settings = PluginSettings {
        path: hostile_plugin(),
        memory_limit: MEMORY_LIMIT,
        call_timeout: CALL_TIMEOUT,
        workers: 1,
        reload: None,
        settings: Vec::new(),
        outputs: OutputLimits {
            topics: vec!["scores".into(), "audit".into()],
            ..OutputLimits::default()
        },
        cache_dir: None,
    };
    let plugin = PluginHost::new()
        .expect("engine")
        .load(&settings)
        .expect("loads");
    PluginPool::start(plugin, 1).expect("starts")
}

fn record(offset: i64, command: &str) -> InputRecord {
    InputRecord {
        topic: "commands".into(),
        partition: 0,
        offset,
        timestamp: None,
        key: None,
        value: Some(command.as_bytes().to_vec()),
        headers: Vec::new(),
        fields: streaminfer::contract::NO_FIELDS,
    }
}

fn emitted(decision: &Result<Decision, Failure>) -> Vec<u8> {
    match decision {
        Ok(Decision::Emit(outputs)) if outputs.len() == 1 => {
            outputs[0].value.clone().unwrap_or_default()
        }
        other => panic!("expected one emitted record, got {other:?}"),
    }
}

/// Runs `ok, <command>, ok` and checks the neighbours; returns the command's result and how
/// long the batch took.
async fn between_good_records(
    pool: &PluginPool,
    command: &str,
) -> (Result<Decision, Failure>, Duration) {
    let started = Instant::now();
    let (_, mut decisions) = pool
        .prepare(vec![record(1, "ok"), record(2, command), record(3, "ok")])
        .await
        .expect("the plugin keeps serving");
    let elapsed = started.elapsed();
    assert_eq!(decisions.len(), 3);
    assert_eq!(
        emitted(&decisions[0]),
        b"ok",
        "the record before {command} is served"
    );
    assert_eq!(
        emitted(&decisions[2]),
        b"ok",
        "the record after {command} is served"
    );
    (decisions.remove(1), elapsed)
}

fn failure(result: Result<Decision, Failure>) -> Failure {
    result.expect_err("the bad record fails")
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_wall_clock_limit() {
    let pool = pool();
    let (result, elapsed) = between_good_records(&pool, "loop").await;
    let failure = failure(result);
    assert_eq!(failure.reason.code(), "plugin-timeout", "{failure}");
    assert!(elapsed < CONTAINED_WITHIN, "containment took {elapsed:?}");
    assert!(
        elapsed >= CALL_TIMEOUT,
        "the limit cannot fire before it is due ({elapsed:?})"
    );
    pool.shutdown();
}

#[tokio::test]
async fn a_blocking_sleep_is_stopped_by_the_wall_clock_limit_and_a_short_one_is_kept() {
    let pool = pool();
    let (result, elapsed) = between_good_records(&pool, "sleep").await;
    let failure = failure(result);
    assert_eq!(failure.reason.code(), "plugin-timeout", "{failure}");
    assert!(elapsed < CONTAINED_WITHIN, "containment took {elapsed:?}");
    let started = Instant::now();
    let (_, decisions) = pool
        .prepare(vec![record(4, "nap")])
        .await
        .expect("the plugin keeps serving");
    assert_eq!(emitted(&decisions[0]), b"napped");
    assert!(
        started.elapsed() >= Duration::from_millis(10),
        "a sleep within the limit still sleeps"
    );
    pool.shutdown();
}

#[tokio::test]
async fn shutting_down_waits_for_a_busy_worker_no_longer_than_two_calls() {
    let pool = std::sync::Arc::new(pool());
    let shared = pool.clone();
    // Twenty loops: the batch call times out, then each is tried alone, 21 limits in a row.
    let busy = tokio::spawn(async move {
        let loops = (0..20).map(|i| record(i, "loop")).collect();
        shared.prepare(loops).await
    });
    tokio::time::sleep(CALL_TIMEOUT + Duration::from_millis(100)).await;
    busy.abort();
    let _ = busy.await;
    let pool = std::sync::Arc::into_inner(pool).expect("the only owner");
    let started = Instant::now();
    pool.shutdown();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited {took:?} for a worker with seconds of work left"
    );
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let pool = pool();
    let (result, elapsed) = between_good_records(&pool, "memory").await;
    let failure = failure(result);
    assert_eq!(failure.reason.code(), "plugin-memory", "{failure}");
    assert!(
        failure.message.contains(&MEMORY_LIMIT.to_string()),
        "{failure}"
    );
    assert!(elapsed < CONTAINED_WITHIN, "containment took {elapsed:?}");
    pool.shutdown();
}

#[tokio::test]
async fn stack_overflow_and_panic_are_traps() {
    let pool = pool();
    for command in ["recurse", "panic"] {
        let (result, elapsed) = between_good_records(&pool, command).await;
        let failure = failure(result);
        assert_eq!(failure.reason.code(), "plugin-trap", "{command}: {failure}");
        assert!(
            elapsed < CONTAINED_WITHIN,
            "{command}: containment took {elapsed:?}"
        );
    }
    pool.shutdown();
}

#[tokio::test]
async fn the_plugin_has_no_files_no_network_and_no_environment() {
    let pool = pool();
    for command in ["open-file", "connect"] {
        let (result, _) = between_good_records(&pool, command).await;
        let failure = failure(result);
        assert_eq!(
            failure.reason.code(),
            "plugin-error",
            "{command}: {failure}"
        );
        assert!(failure.message.contains("denied"), "{command}: {failure}");
    }
    let (result, _) = between_good_records(&pool, "env").await;
    let seen: serde_json::Value = serde_json::from_slice(&emitted(&result)).expect("JSON");
    assert_eq!(
        seen["vars"], 0,
        "no environment variables leak into the sandbox"
    );
    assert_eq!(seen["args"], 0, "no arguments leak into the sandbox");
    pool.shutdown();
}

#[tokio::test]
async fn an_output_past_max_output_bytes_fails_its_record() {
    let pool = pool();
    let failure = prepare_fails(&pool, "huge-output").await;
    assert_eq!(failure.reason, Reason::OutputLimit, "{failure}");
    assert!(failure.message.contains("2097152 bytes"), "{failure}");
    pool.shutdown();
}

/// The reason `command`'s record fails with, run between good records in `prepare`.
async fn prepare_fails(pool: &PluginPool, command: &str) -> Failure {
    let (result, _) = between_good_records(pool, command).await;
    failure(result)
}

/// The reason `then-<command>` fails with in `complete`: prepared (a valid request), answered
/// by a made-up response, completed beside a good record's completion.
async fn complete_fails(pool: &PluginPool, command: &str) -> Failure {
    let (records, decisions) = pool
        .prepare(vec![
            record(1, "then-ok"),
            record(2, &format!("then-{command}")),
        ])
        .await
        .expect("the plugin keeps serving");
    let completions = records
        .iter()
        .zip(decisions)
        .map(|(r, d)| match d {
            Ok(Decision::Infer(call)) => Completion {
                origin: Origin::of(r),
                state: call.state,
                response: InferenceResponse {
                    model: ModelInfo {
                        name: "fraud".into(),
                        version: None,
                    },
                    outputs: Vec::new(),
                },
            },
            other => panic!("expected a model call, got {other:?}"),
        })
        .collect();
    let mut completed = pool.complete(completions).await.expect("serving");
    assert_eq!(completed.len(), 2);
    let bad = completed.pop().expect("two results");
    assert!(
        matches!(completed.pop(), Some(Err(ref f)) if f.reason == Reason::InvalidRecord),
        "the neighbour is judged on its own (then-ok is no command for complete)"
    );
    bad.expect_err("the bad completion fails")
}

#[tokio::test]
async fn a_miscounted_batch_fails_only_the_record_that_miscounts_alone() {
    let pool = pool();
    for command in ["extra-result", "missing-result"] {
        let failure = prepare_fails(&pool, command).await;
        assert_eq!(
            failure.reason,
            Reason::PluginContract,
            "{command}: {failure}"
        );
    }
    pool.shutdown();
}

#[tokio::test]
async fn output_floods_fail_their_record_in_prepare_and_in_complete() {
    let pool = pool();
    for command in ["many-outputs", "wide-outputs"] {
        let failure = prepare_fails(&pool, command).await;
        assert_eq!(failure.reason, Reason::OutputLimit, "{command}: {failure}");
        let failure = complete_fails(&pool, command).await;
        assert_eq!(failure.reason, Reason::OutputLimit, "{command}: {failure}");
    }
    pool.shutdown();
}

#[tokio::test]
async fn only_allowed_topics_may_be_named_in_prepare_and_in_complete() {
    let pool = pool();
    for command in ["topic-input", "topic-empty", "topic-invalid"] {
        let failure = prepare_fails(&pool, command).await;
        assert_eq!(
            failure.reason,
            Reason::TopicNotAllowed,
            "{command}: {failure}"
        );
        let failure = complete_fails(&pool, command).await;
        assert_eq!(
            failure.reason,
            Reason::TopicNotAllowed,
            "{command}: {failure}"
        );
    }
    pool.shutdown();
}

#[tokio::test]
async fn requests_no_model_can_take_are_the_plugins_fault_before_any_model_sees_them() {
    let pool = pool();
    for command in ["bad-shape", "negative-dim", "duplicate-input"] {
        let failure = prepare_fails(&pool, command).await;
        assert_eq!(
            failure.reason,
            Reason::InvalidRequest,
            "{command}: {failure}"
        );
        assert_eq!(failure.fault(), Fault::Plugin);
    }
    pool.shutdown();
}

#[tokio::test]
async fn a_panics_message_and_place_reach_the_dead_letter() {
    let pool = pool();
    let failure = prepare_fails(&pool, "panic").await;
    assert_eq!(failure.reason, Reason::PluginTrap);
    assert!(
        failure.message.contains("asked to panic") && failure.message.contains("lib.rs:"),
        "{failure}"
    );
    pool.shutdown();
}

/// The record is served and the flood ends; the rate limit itself is checked on the runtime's
/// log by the end-to-end test (here no subscriber writes the log).
#[tokio::test]
async fn a_log_flood_ends_and_its_record_is_served() {
    let pool = pool();
    let (result, elapsed) = between_good_records(&pool, "log-flood").await;
    assert_eq!(emitted(&result), b"logged");
    assert!(elapsed < CONTAINED_WITHIN, "the flood took {elapsed:?}");
    pool.shutdown();
}
